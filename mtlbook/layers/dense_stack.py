"""A stack of Dense layers: the building block of experts and towers."""

import numbers

import keras


def check_units(name, units):
    """Returns `units` as a tuple of positive ints, or raises `ValueError`.

    Bools are refused (`True` is an int in Python, not a width); NumPy
    ints are accepted and converted to `int`.

    Args:
        name: str. The argument's name, for the message.
        units: a non-empty list or tuple of ints > 0.

    Returns:
        tuple of Python ints.

    Example:

    ```python
    check_units("units", [32, 16])  # (32, 16)
    ```
    """
    if not isinstance(units, (list, tuple)) or not units or not all(
            isinstance(u, numbers.Integral) and not isinstance(u, bool)
            and u > 0 for u in units):
        raise ValueError(
            f"`{name}` must be a non-empty list or tuple of positive ints. "
            f"Received: {name}={units!r}"
        )
    return tuple(int(u) for u in units)


def check_activation(name, activation):
    """Raises `ValueError` unless Keras knows `activation`.

    Args:
        name: str. The argument's name, for the message.
        activation: None, a callable or the name of a Keras activation.

    Example:

    ```python
    check_activation("activation", "relux")  # ValueError naming it
    ```
    """
    try:
        keras.activations.get(activation)
    except ValueError:
        raise ValueError(
            f"`{name}` must be None, a callable or the name of a Keras "
            f"activation (such as 'relu'). Received: {name}={activation!r}"
        ) from None


def is_shape(shape):
    """Whether `shape` is one tensor's shape (a sequence of ints and None).

    Args:
        shape: anything a layer's `build` may receive.

    Returns:
        bool; False for a list of shapes.

    Example:

    ```python
    is_shape((None, 5)), is_shape([(None, 5), (None, 5)])  # True, False
    ```
    """
    return isinstance(shape, (list, tuple)) and all(
        d is None or isinstance(d, numbers.Integral) for d in shape
    )


def check_matrix_shape(name, shape):
    """Raises `ValueError` unless `shape` is one `(batch, features)` shape.

    Args:
        name: str. The argument's name, for the message.
        shape: the shape a layer's `build` received.

    Example:

    ```python
    check_matrix_shape("inputs", (None, 3, 5))  # ValueError: rank 3
    ```
    """
    if not is_shape(shape) or len(shape) != 2:
        raise ValueError(
            f"`{name}` must be one tensor of shape (batch, features). "
            f"Received: input_shape={shape}"
        )


@keras.saving.register_keras_serializable(package="mtlbook")
class DenseStack(keras.layers.Layer):
    """Applies `len(units)` Dense layers in turn.

    `y = f_n(... f_1(x))` with `f_i(h) = activation(h @ W_i + b_i)`; the last
    layer uses `output_activation` instead of `activation`.

    Args:
        units: list or tuple of ints > 0. Width of each Dense layer.
        activation: str, callable or None. Activation of every layer but
            the last (`None`: linear).
        output_activation: str, callable or None. Activation of the last
            layer; `None` (the default) means `activation`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...). The dtype
            policy (say `"mixed_float16"`) is passed on to the Dense layers.

    Call arguments:
        inputs: tensor of shape `(batch, features)` (or `(..., features)`:
            the Dense layers act on the last axis).

    Returns:
        Tensor of shape `(batch, units[-1])`.

    Example:

    ```python
    expert = DenseStack((32, 16))
    features = expert(keras.ops.ones((4, 100)))  # (4, 16)
    ```
    """

    def __init__(self, units=(16,), activation="relu", output_activation=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = check_units("units", units)
        check_activation("activation", activation)
        check_activation("output_activation", output_activation)
        self.activation = activation
        self.output_activation = output_activation
        last = activation if output_activation is None else output_activation
        self.dense_layers = [
            keras.layers.Dense(
                width,
                activation=last if i == len(self.units) - 1 else activation,
                name=f"dense_{i}",
                dtype=self.dtype_policy,
            )
            for i, width in enumerate(self.units)
        ]

    def build(self, input_shape):
        if not is_shape(input_shape) or len(input_shape) < 2:
            raise ValueError(
                "`inputs` must be one tensor of shape (batch, features). "
                f"Received: input_shape={input_shape}"
            )
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)

    def call(self, inputs):
        x = inputs
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": list(self.units),
            "activation": self.activation,
            "output_activation": self.output_activation,
        })
        return config
