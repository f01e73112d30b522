"""Gradient reversal: identity forward, gradient times -lambda backward."""

import math
import numbers

import keras
from keras import ops


def _check_real(name, value, low, low_included=True, high=None):
    """Returns `value` as a float, or raises `ValueError` naming `name`.

    Accepts finite real numbers (NumPy ones too) in the range; refuses
    bools (`True` is an int in Python), strings, NaN and infinities.

    Args:
        name: str. The argument's name, for the message.
        value: the argument.
        low: float. Lower bound.
        low_included: bool. Whether `value == low` is allowed.
        high: float or None. Upper bound (included), if any.

    Returns:
        `value` as a float.
    """
    expected = f"{'>=' if low_included else '>'} {low}"
    if high is not None:
        expected = f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
        not math.isfinite(value)
        or (value < low if low_included else value <= low)
        or (high is not None and value > high)
    ):
        raise ValueError(
            f"`{name}` must be a finite float {expected}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="mtlbook")
class GradientReversal(keras.layers.Layer):
    """Passes its input through and multiplies the gradient by `-lambda`.

    Forward it returns `x`; backward it returns `-lambda * upstream_grad`.
    Put it between a feature extractor and a domain classifier: the
    classifier learns to tell domains apart while the features learn to
    make them indistinguishable (domain-adversarial training, DANN).

    It is built from `stop_gradient`, so it works on every Keras backend:
    `y = s + (-lambda) * (x - s)` with `s = stop_gradient(x)`. Forward,
    `x - s` is exactly zero, so `y == x` bit for bit; backward only the
    `x` term carries a gradient, `-lambda`.

    `lambda` is a non-trainable weight, so it can change during training
    (see `DANNSchedule`) and is saved with the model.

    Args:
        lambda_: finite float >= 0. Initial gradient scale. A negative
            value is refused: the gradient would then pass unreversed, and
            the features would help the domain classifier instead of
            fooling it.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of any shape.

    Returns:
        `inputs`, unchanged.

    Example:

    ```python
    features = encoder(images)
    domain = keras.layers.Dense(1)(GradientReversal(1.0)(features))
    ```

    Reference:
        Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks".
    """

    def __init__(self, lambda_=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_lambda = _check_real("lambda_", lambda_, 0.0)
        self.lambda_ = self.add_weight(
            name="lambda",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_lambda),
            trainable=False,
        )

    def call(self, inputs):
        frozen = ops.stop_gradient(inputs)
        scale = ops.cast(self.lambda_, inputs.dtype)
        return frozen + (-scale) * (inputs - frozen)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"lambda_": self.initial_lambda})
        return config


def dann_lambda(progress, gamma=10.0, maximum=1.0):
    """The DANN schedule `maximum * (2 / (1 + exp(-gamma * p)) - 1)`.

    Args:
        progress: float in [0, 1]. Fraction of training done.
        gamma: finite float > 0. Steepness (10 in the paper).
        maximum: finite float >= 0. Value approached at the end of
            training.

    Returns:
        float, 0 at `progress=0`, rising towards `maximum`.

    Example:

    ```python
    dann_lambda(0.5)  # 0.9866...
    ```
    """
    progress = _check_real("progress", progress, 0.0, high=1.0)
    gamma = _check_real("gamma", gamma, 0.0, low_included=False)
    maximum = _check_real("maximum", maximum, 0.0)
    return maximum * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


class DANNSchedule(keras.callbacks.Callback):
    """Sets a `GradientReversal` layer's lambda before every training batch.

    `lambda = maximum * (2 / (1 + exp(-gamma * p)) - 1)` with `p` the
    fraction of the `total_steps` done, as in Ganin et al. (2016).

    Args:
        layer: the `GradientReversal` layer to drive.
        total_steps: int >= 1. Number of training batches in the whole run.
        gamma: finite float > 0. Steepness (10 in the paper).
        maximum: finite float >= 0. Final lambda.

    Example:

    ```python
    schedule = DANNSchedule(model.get_layer("reversal"), epochs * steps)
    model.fit(..., callbacks=[schedule])
    ```
    """

    def __init__(self, layer, total_steps, gamma=10.0, maximum=1.0):
        super().__init__()
        if not isinstance(layer, GradientReversal):
            raise TypeError(
                "`layer` must be a GradientReversal layer. "
                f"Received: layer={layer!r:.80} of type {type(layer).__name__}"
            )
        if isinstance(total_steps, bool) or not isinstance(
                total_steps, numbers.Integral) or total_steps < 1:
            raise ValueError(
                "`total_steps` must be a positive int. "
                f"Received: total_steps={total_steps!r}"
            )
        self.layer, self.total_steps = layer, int(total_steps)
        self.gamma = _check_real("gamma", gamma, 0.0, low_included=False)
        self.maximum = _check_real("maximum", maximum, 0.0)
        self.step = 0
        self.values = []

    def on_train_batch_begin(self, batch, logs=None):
        # Reading `self.model` makes the JAX backend write its training
        # state back into the variables and read them again before the
        # next step, so that the new lambda reaches it (no-op elsewhere).
        self.model
        progress = min(self.step / self.total_steps, 1.0)
        value = dann_lambda(progress, self.gamma, self.maximum)
        self.layer.lambda_.assign(value)
        self.values.append(value)
        self.step += 1
