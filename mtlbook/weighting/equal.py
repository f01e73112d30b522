"""Equal weighting: the plain sum of the task losses."""

import keras

from mtlbook.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="mtlbook")
class EqualWeighting(LossWeighting):
    """Sums the task losses: `total = sum_i L_i` (every weight is 1).

    This is what `keras.Model.compile` does with a dict of losses and no
    `loss_weights`, and the baseline every other strategy is compared to.

    Args:
        num_tasks: optional int. Number of tasks; inferred when the model
            builds the strategy.
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_losses: `(T,)` tensor of task losses.

    Returns:
        Scalar tensor, the sum of the task losses.

    Example:

    ```python
    total = EqualWeighting()(keras.ops.array([0.5, 2.0]))  # 2.5
    ```
    """

    def task_weights(self):
        return keras.ops.ones((self.num_tasks,), dtype=self.dtype)
