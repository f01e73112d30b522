"""MGDA: the minimum-norm point of the task gradients' convex hull."""

import keras
from keras import ops

from .base import GradientMethod, check_task_gradients, gram_matrix


def _two_vector_min_norm(dot_11, dot_12, dot_22):
    """`gamma` minimising |gamma v1 + (1 - gamma) v2|^2 over [0, 1]."""
    denominator = dot_11 + dot_22 - 2.0 * dot_12
    gamma = (dot_22 - dot_12) / ops.maximum(denominator, 1e-20)
    return ops.clip(gamma, 0.0, 1.0)


def mgda_weights(task_gradients, max_iterations=100):
    """Task weights of the minimum-norm point in the gradients' hull.

    Solves `min_{w in simplex} |sum_i w_i g_i|^2`. For two tasks the
    closed form `w_1 = clip(((g_2 - g_1) . g_2) / |g_1 - g_2|^2, 0, 1)`,
    `w_2 = 1 - w_1` is used; for more tasks Frank-Wolfe on the Gram matrix
    `M = G G^T`: start at `w = 1/T`, pick `t = argmin_i (M w)_i`, move
    `w <- gamma * w + (1 - gamma) * e_t` with the exact line search
    `gamma` of the two-vector problem, `max_iterations` times.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        max_iterations: int. Frank-Wolfe iterations (T > 2 only).

    Returns:
        `(T,)` tensor of weights on the simplex.

    Example:

    ```python
    mgda_weights([[1.0, 0.0], [0.0, 2.0]])  # [0.8, 0.2]
    ```

    Reference:
        Sener and Koltun, 2018, "Multi-Task Learning as Multi-Objective
        Optimization".
    """
    gradients = check_task_gradients(task_gradients)
    gradients = ops.cast(gradients, "float32")
    num_tasks = gradients.shape[0]
    gram = gram_matrix(gradients)
    if num_tasks == 1:
        return ops.ones((1,))
    if num_tasks == 2:
        gamma = _two_vector_min_norm(gram[0, 0], gram[0, 1], gram[1, 1])
        return ops.stack([gamma, 1.0 - gamma])
    identity = ops.eye(num_tasks)

    def step(_, weights):
        gram_weights = ops.matmul(gram, weights)
        target = ops.argmin(gram_weights)
        corner = ops.take(identity, target, axis=0)
        gamma = _two_vector_min_norm(
            ops.sum(weights * gram_weights),
            ops.take(gram_weights, target),
            ops.take(ops.diagonal(gram), target),
        )
        return gamma * weights + (1.0 - gamma) * corner

    weights = ops.ones((num_tasks,)) / num_tasks
    return ops.fori_loop(0, max_iterations, step, weights)


@keras.saving.register_keras_serializable(package="mtlbook")
class MGDA(GradientMethod):
    """Gradient method layer: the min-norm combination of task gradients.

    The update is `T * sum_i w_i g_i` with `w = mgda_weights(G)`; the factor
    `T` makes it equal to the gradient of the summed losses when all
    weights are `1/T`, so learning rates carry over from equal weighting.

    Args:
        max_iterations: int. Frank-Wolfe iterations for more than 2 tasks.
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: ignored (kept for a common signature).

    Returns:
        `(D,)` tensor.

    Reference:
        Sener and Koltun, 2018, "Multi-Task Learning as Multi-Objective
        Optimization".
    """

    def __init__(self, max_iterations=100, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.max_iterations = int(max_iterations)

    def call(self, task_gradients, step=0):
        del step
        gradients = ops.convert_to_tensor(task_gradients)
        weights = mgda_weights(gradients, self.max_iterations)
        num_tasks = gradients.shape[0]
        return num_tasks * ops.matmul(weights, gradients)

    def get_config(self):
        config = super().get_config()
        config.update({"max_iterations": self.max_iterations})
        return config
