"""Bottleneck adapter: a small residual MLP inserted after a frozen block."""

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtlbook")
class Adapter(keras.layers.Layer):
    """A bottleneck MLP with a residual connection (Houlsby et al.).

    For inputs `x` with `d` features (the last axis) it returns

        y = x + W_up(activation(W_down(x)))

    where `W_down` is a Dense layer `d -> bottleneck` and `W_up` a Dense
    layer `bottleneck -> d`. The up-projection's kernel and bias start at
    zero, so at initialisation `y = x` exactly: inserted after a block of
    a pretrained network, the adapter leaves the network unchanged until
    training moves it. It trains `2 * d * bottleneck + bottleneck + d`
    parameters. The sub-layers follow this layer's dtype policy.

    Args:
        bottleneck: int > 0. Width of the hidden (down-projected) layer.
        activation: str or callable. Activation of the hidden layer.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(..., d)`.

    Returns:
        Tensor of the same shape as `inputs`.

    Example:

    ```python
    features = frozen_block(inputs)
    features = Adapter(bottleneck=8)(features)  # identity at first
    ```

    Reference:
        Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for
        NLP".
    """

    def __init__(self, bottleneck, activation="relu", **kwargs):
        super().__init__(**kwargs)
        if (not isinstance(bottleneck, numbers.Integral)
                or isinstance(bottleneck, bool) or bottleneck <= 0):
            raise ValueError(
                "`bottleneck` must be a positive int. "
                f"Received: bottleneck={bottleneck!r}"
            )
        try:
            keras.activations.get(activation)
        except (ValueError, TypeError):
            raise ValueError(
                "`activation` must be None, a callable or the name of a "
                "Keras activation (such as 'relu'). "
                f"Received: activation={activation!r}"
            ) from None
        self.bottleneck = int(bottleneck)
        self.activation = activation

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "The last axis of the inputs of `Adapter` must be known. "
                f"Received: input_shape={input_shape}"
            )
        self.down = keras.layers.Dense(
            self.bottleneck, activation=self.activation,
            dtype=self.dtype_policy, name="down",
        )
        self.up = keras.layers.Dense(
            features, kernel_initializer="zeros", bias_initializer="zeros",
            dtype=self.dtype_policy, name="up",
        )
        self.down.build(input_shape)
        self.up.build(tuple(input_shape[:-1]) + (self.bottleneck,))

    def call(self, inputs):
        return ops.add(inputs, self.up(self.down(inputs)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "bottleneck": self.bottleneck,
            "activation": keras.activations.serialize(
                keras.activations.get(self.activation)),
        })
        return config
