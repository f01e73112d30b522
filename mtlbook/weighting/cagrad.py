"""CAGrad: conflict-averse gradient descent (Liu et al., 2021)."""

import keras
from keras import ops

from .base import GradientMethod, check_task_gradients, gram_matrix


def cagrad_weights(task_gradients, c=0.4, max_iterations=50):
    """Simplex weights `w` of CAGrad's dual problem.

    With `g_0 = mean_i g_i`, `g_w = sum_i w_i g_i` and
    `phi = c^2 |g_0|^2`, minimises `F(w) = g_w . g_0 + sqrt(phi) |g_w|`
    over the simplex by Frank-Wolfe (step `2 / (k + 2)`) on the Gram matrix.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        c: float >= 0. Radius of the ball around `g_0`.
        max_iterations: int. Frank-Wolfe iterations.

    Returns:
        `(T,)` tensor of weights on the simplex.
    """
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    num_tasks = gradients.shape[0]
    gram = gram_matrix(gradients)
    scale = ops.maximum(ops.max(ops.abs(gram)), 1e-20)
    gram = gram / scale  # F scales linearly with gram: same minimiser
    mean_weights = ops.ones((num_tasks,)) / num_tasks
    gram_mean = ops.matmul(gram, mean_weights)
    radius = c * ops.sqrt(ops.sum(gram_mean * mean_weights) + 1e-12)
    identity = ops.eye(num_tasks)

    def step(iteration, weights):
        gram_weights = ops.matmul(gram, weights)
        norm = ops.sqrt(ops.sum(weights * gram_weights) + 1e-12)
        gradient = gram_mean + radius * gram_weights / norm
        corner = ops.take(identity, ops.argmin(gradient), axis=0)
        rate = 2.0 / (ops.cast(iteration, "float32") + 2.0)
        return (1.0 - rate) * weights + rate * corner

    return ops.fori_loop(0, max_iterations, step, mean_weights)


def cagrad(task_gradients, c=0.4, max_iterations=50):
    """Conflict-averse update direction of CAGrad.

    `d = (g_0 + sqrt(phi) / |g_w| * g_w) / (1 + c^2)` with `w` from
    `cagrad_weights`, `g_0` the mean task gradient and
    `sqrt(phi) = c |g_0|`; the division by `1 + c^2` is the rescaling of
    the authors' code. With `c = 0` it is the mean gradient.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        c: float >= 0. Trade-off between the mean gradient (`c = 0`) and
            the worst task's improvement.
        max_iterations: int. Frank-Wolfe iterations.

    Returns:
        `(D,)` tensor.

    Example:

    ```python
    cagrad([[1.0, 0.0], [-0.5, 1.0]], c=0.4)
    ```

    Reference:
        Liu, Liu, Jin, Stone and Liu, 2021, "Conflict-Averse Gradient
        Descent for Multi-task Learning".
    """
    if not isinstance(c, (int, float)) or c < 0:
        raise ValueError(f"`c` must be a float >= 0. Received: c={c!r}")
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    weights = cagrad_weights(gradients, c, max_iterations)
    mean_gradient = ops.mean(gradients, axis=0)
    combined = ops.matmul(weights, gradients)
    radius = c * ops.sqrt(ops.sum(mean_gradient * mean_gradient))
    combined_norm = ops.sqrt(ops.sum(combined * combined))
    direction = mean_gradient + radius / ops.maximum(
        combined_norm, 1e-20
    ) * combined
    return direction / (1.0 + c ** 2)


@keras.saving.register_keras_serializable(package="mtlbook")
class CAGrad(GradientMethod):
    """Gradient method layer around `cagrad`.

    The update is `T * cagrad(G, c)`: CAGrad works with the *mean*
    gradient, and the factor `T` puts it on the scale of the summed losses
    of equal weighting, so learning rates carry over.

    Args:
        c: float >= 0. See `cagrad` (0.4 in the paper's multi-task
            experiments).
        max_iterations: int. Frank-Wolfe iterations.
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: ignored (kept for a common signature).

    Returns:
        `(D,)` tensor.

    Reference:
        Liu et al., 2021, "Conflict-Averse Gradient Descent for Multi-task
        Learning".
    """

    def __init__(self, c=0.4, max_iterations=50, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        if not isinstance(c, (int, float)) or c < 0:
            raise ValueError(f"`c` must be a float >= 0. Received: c={c!r}")
        self.c = float(c)
        self.max_iterations = int(max_iterations)

    def call(self, task_gradients, step=0):
        del step
        gradients = ops.convert_to_tensor(task_gradients)
        num_tasks = gradients.shape[0]
        return num_tasks * cagrad(gradients, self.c, self.max_iterations)

    def get_config(self):
        config = super().get_config()
        config.update({"c": self.c, "max_iterations": self.max_iterations})
        return config
