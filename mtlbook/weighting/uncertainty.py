"""Uncertainty weighting with learned log-variances (Kendall et al., 2018)."""

import math
import numbers

import keras
from keras import ops

from .base import LossWeighting


@keras.saving.register_keras_serializable(package="mtlbook")
class UncertaintyWeighting(LossWeighting):
    """Weights each task loss by a learned homoscedastic uncertainty.

    With one trainable log-variance `s_i = log(sigma_i ** 2)` per task,

        total = sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i

    which is the Gaussian negative log-likelihood form of Kendall et al.
    (`L_i / (2 sigma_i^2) + log sigma_i`), used for every task here. We
    learn `s_i` rather than `sigma_i` because it is unconstrained and
    numerically stable. For a mean-squared-error loss the minimiser over
    `s_i` is `exp(s_i) = L_i`, so `sigma_i` recovers the residual standard
    deviation of task `i` (the paper's toy problem checks this). The
    weights reported by `task_weights()` are `0.5 * exp(-s_i)`.

    The log-variances are trained by the model's optimizer together with
    the network.

    Args:
        num_tasks: optional int. Number of tasks (inferred when built).
        initial_log_variance: finite float. Starting value of every
            `s_i`.
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_losses: `(T,)` tensor of task losses.

    Returns:
        Scalar tensor, the total above.

    Example:

    ```python
    weighting = UncertaintyWeighting()
    total = weighting(keras.ops.array([1.0, 4.0]))  # 0.5 * (1 + 4) at s=0
    ```

    Reference:
        Kendall, Gal and Cipolla, 2018, "Multi-Task Learning Using
        Uncertainty to Weigh Losses for Scene Geometry and Semantics".
    """

    def __init__(self, num_tasks=None, initial_log_variance=0.0, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        message = (
            "`initial_log_variance` must be a finite float. Received: "
            f"initial_log_variance={initial_log_variance!r}"
        )
        if isinstance(initial_log_variance, bool) or not isinstance(
            initial_log_variance, numbers.Real
        ):
            raise TypeError(message)
        if not math.isfinite(initial_log_variance):
            raise ValueError(message)
        self.initial_log_variance = float(initial_log_variance)

    def build(self, input_shape):
        super().build(input_shape)
        self.log_variance = self.add_weight(
            name="log_variance",
            shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            trainable=True,
        )

    def task_weights(self):
        return 0.5 * ops.exp(-ops.convert_to_tensor(self.log_variance))

    def sigma(self):
        """Returns the `(T,)` learned standard deviations `exp(s_i / 2)`."""
        return ops.exp(0.5 * ops.convert_to_tensor(self.log_variance))

    def combine_losses(self, task_losses):
        if not self.built:
            raise ValueError(
                "Call `set_tasks(task_names)` (or the layer itself) before "
                "`combine_losses`: UncertaintyWeighting does not know its "
                "tasks yet. Received: num_tasks=None"
            )
        task_losses = ops.cast(task_losses, self.dtype)
        shape = tuple(task_losses.shape)
        if len(shape) != 1 or shape[0] not in (None, self.num_tasks):
            raise ValueError(
                f"`task_losses` must have shape ({self.num_tasks},), one "
                "loss per task. Received: "
                f"task_losses.shape={tuple(task_losses.shape)}"
            )
        log_variance = ops.convert_to_tensor(self.log_variance)
        return ops.sum(
            0.5 * ops.exp(-log_variance) * task_losses + 0.5 * log_variance
        )

    def get_config(self):
        config = super().get_config()
        config.update({"initial_log_variance": self.initial_log_variance})
        return config
