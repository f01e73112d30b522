"""PCGrad: projecting conflicting gradients (Yu et al., 2020)."""

import keras
import tensorflow as tf
from keras import ops

from mtlbook.weighting.base import GradientMethod


def _check_gradients(task_gradients):
    task_gradients = ops.convert_to_tensor(task_gradients)
    if len(task_gradients.shape) != 2:
        raise ValueError(
            "`task_gradients` must have shape (num_tasks, num_parameters). "
            f"Received: task_gradients.shape={task_gradients.shape}"
        )
    return task_gradients


def pcgrad(task_gradients, seed=None):
    """Projects each task gradient away from the ones it conflicts with.

    One random order `o` of the tasks is drawn per call. For each task `i`,
    `p_i` starts at `g_i`; then for every other task `j` in order `o`, if
    `p_i . g_j < 0` (conflict with task `j`'s *original* gradient),
    `p_i <- p_i - (p_i . g_j) / |g_j|^2 * g_j`. The update is
    `sum_i p_i`. Gradients that do not conflict pass unchanged.

    Args:
        task_gradients: `(T, D)` tensor, row `i` the flattened gradient of
            task `i`'s loss with respect to the shared parameters.
        seed: None (a fresh random order), an int, or a length-2 integer
            tensor (a stateless seed, e.g. `[seed, step]`).

    Returns:
        `(D,)` tensor, the summed projected gradients.

    Example:

    ```python
    pcgrad([[1.0, 0.0], [-1.0, 1.0]])  # [0.5, 1.5]
    ```

    Reference:
        Yu et al., 2020, "Gradient Surgery for Multi-Task Learning".
    """
    gradients = _check_gradients(task_gradients)
    num_tasks = gradients.shape[0]
    if seed is None:
        order = tf.random.shuffle(tf.range(num_tasks))
    else:
        if isinstance(seed, int):
            seed = [seed, 0]
        seed = tf.cast(tf.convert_to_tensor(seed), "int64")
        order = tf.argsort(
            tf.random.stateless_uniform((num_tasks,), seed=seed)
        )
    squared_norms = ops.sum(gradients * gradients, axis=1)
    projected = gradients
    task_index = ops.arange(num_tasks)
    for position in range(num_tasks):
        other = order[position]
        other_gradient = ops.take(gradients, other, axis=0)
        dots = ops.matmul(projected, other_gradient)
        coefficient = ops.minimum(dots, 0.0) / ops.maximum(
            ops.take(squared_norms, other), 1e-20
        )
        coefficient = ops.where(task_index == other, 0.0, coefficient)
        projected = projected - coefficient[:, None] * other_gradient[None, :]
    return ops.sum(projected, axis=0)


@keras.saving.register_keras_serializable(package="mtlbook")
class PCGrad(GradientMethod):
    """Gradient method layer around `pcgrad`.

    The random task order is drawn from the stateless seed
    `[seed, step]`, so that a run (and a resumed run) is repeatable and all
    replicas of a distributed run draw the same order.

    Args:
        seed: int. Seed of the task order.
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: integer scalar, the training step.

    Returns:
        `(D,)` tensor, `pcgrad(task_gradients, seed=[seed, step])`.

    Reference:
        Yu et al., 2020, "Gradient Surgery for Multi-Task Learning".
    """

    def __init__(self, seed=0, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        if not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int. Received: seed={seed!r}")
        self.seed = seed

    def call(self, task_gradients, step=0):
        step = tf.cast(step, "int64")
        return pcgrad(task_gradients, seed=tf.stack([self.seed, step]))

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config
