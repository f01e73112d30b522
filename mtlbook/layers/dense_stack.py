"""A stack of Dense layers: the building block of experts and towers."""

import keras


def check_units(name, units):
    """Returns `units` as a tuple of positive ints, or raises `ValueError`."""
    if isinstance(units, (int, str)) or not isinstance(units, (list, tuple)) \
            or not units or not all(
                isinstance(u, int) and not isinstance(u, bool) and u > 0
                for u in units):
        raise ValueError(
            f"`{name}` must be a non-empty sequence of positive ints. "
            f"Received: {name}={units!r}"
        )
    return tuple(units)


@keras.saving.register_keras_serializable(package="mtlbook")
class DenseStack(keras.layers.Layer):
    """Applies `len(units)` Dense layers in turn.

    `y = f_n(... f_1(x))` with `f_i(h) = activation(h @ W_i + b_i)`; the last
    layer uses `output_activation` instead of `activation`.

    Args:
        units: sequence of ints > 0. Width of each Dense layer.
        activation: str. Activation of every layer but the last.
        output_activation: str or None. Activation of the last layer;
            `None` (the default) means `activation`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, features)`.

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
        self.activation = activation
        self.output_activation = output_activation
        last = activation if output_activation is None else output_activation
        self.dense_layers = [
            keras.layers.Dense(
                width,
                activation=last if i == len(self.units) - 1 else activation,
                name=f"dense_{i}",
            )
            for i, width in enumerate(self.units)
        ]

    def build(self, input_shape):
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
