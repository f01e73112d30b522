"""Cross-stitch unit for soft parameter sharing between task branches."""

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtlbook")
class CrossStitch(keras.layers.Layer):
    """Mixes the activations of `T` task branches with a learned matrix.

    For task `i` it returns `sum_j alpha[i, j] * inputs[j]`; `alpha` starts
    with `self_weight` on the diagonal and `(1 - self_weight) / (T - 1)`
    everywhere else, so each row starts summing to 1.

    Args:
        self_weight: float in [0, 1]. Initial diagonal value of `alpha`
            (0.9 as in Misra et al.).
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list of `T >= 2` tensors of identical shape, one per task.

    Returns:
        List of `T` tensors shaped like the inputs.

    Example:

    ```python
    stitched_a, stitched_b = CrossStitch()([features_a, features_b])
    ```

    Reference:
        Misra et al., 2016, "Cross-stitch Networks for Multi-task Learning".
    """

    def __init__(self, self_weight=0.9, **kwargs):
        super().__init__(**kwargs)
        if isinstance(self_weight, bool) or not isinstance(
                self_weight, numbers.Real) or not 0.0 <= self_weight <= 1.0:
            raise ValueError(
                "`self_weight` must be a float in [0, 1]. "
                f"Received: self_weight={self_weight!r}"
            )
        self.self_weight = float(self_weight)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2 \
                or not all(isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(
                "`inputs` must be a list of at least 2 tensors, one per task. "
                f"Received: input_shape={input_shape}"
            )
        batch_sizes = {s[0] for s in input_shape if len(s)} - {None}
        if len({tuple(s[1:]) for s in input_shape}) != 1 \
                or len(batch_sizes) > 1:
            raise ValueError(
                "`inputs` must all have the same shape. "
                f"Received: input_shape={input_shape}"
            )
        num_tasks = len(input_shape)
        self_weight = self.self_weight
        off_diagonal = (1.0 - self_weight) / (num_tasks - 1)

        def initializer(shape, dtype=None):
            eye = ops.eye(num_tasks, dtype=dtype)
            return eye * self_weight + (1.0 - eye) * off_diagonal

        self.alpha = self.add_weight(
            name="alpha", shape=(num_tasks, num_tasks), initializer=initializer
        )

    def call(self, inputs):
        stacked = ops.stack(inputs, axis=0)
        mixed = ops.tensordot(self.alpha, stacked, axes=1)
        return [mixed[i] for i in range(len(inputs))]

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape]

    def get_config(self):
        config = super().get_config()
        config.update({"self_weight": self.self_weight})
        return config
