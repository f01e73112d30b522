"""MGDA: the minimum-norm point of the task gradients' convex hull."""

import keras
import numpy as np
from keras import ops

from .base import (
    GradientMethod, check_task_gradients, normalized_gram_matrix,
    support_minimizers)

#: Up to this many tasks the minimum is solved exactly, on every support.
MAX_EXACT_TASKS = 10


def _check_iterations(max_iterations):
    if isinstance(max_iterations, bool) or not isinstance(
        max_iterations, (int, np.integer)
    ) or max_iterations < 1:
        raise ValueError(
            "`max_iterations` must be an int >= 1. "
            f"Received: max_iterations={max_iterations!r}"
        )
    return int(max_iterations)


def _two_vector_min_norm(dot_11, dot_12, dot_22):
    """`gamma` minimising |gamma v1 + (1 - gamma) v2|^2 over [0, 1]."""
    denominator = dot_11 + dot_22 - 2.0 * dot_12
    gamma = (dot_22 - dot_12) / ops.maximum(denominator, 1e-20)
    return ops.clip(gamma, 0.0, 1.0)


def _exact_weights(gram):
    """Minimum-norm simplex weights by enumerating every support.

    A non-finite Gram matrix (a NaN or inf gradient) gives NaN weights:
    the linear systems are solved on the identity instead, since some
    backends raise on a system with non-finite entries.
    """
    num_tasks = gram.shape[0]
    finite = ops.all(ops.isfinite(gram))
    gram = ops.where(finite, gram, ops.eye(num_tasks))
    solutions = support_minimizers(gram, ops.ones((num_tasks, 1)))[:, :, 0]
    weights = ops.maximum(solutions, 0.0)
    total = ops.sum(weights, axis=1, keepdims=True)
    weights = ops.where(total > 0.0, weights / ops.where(
        total > 0.0, total, 1.0), 1.0 / num_tasks)
    products = ops.matmul(weights, gram)  # row k: M w_k
    squared_norms = ops.sum(weights * products, axis=1)
    # duality gap of Frank-Wolfe: 0 exactly at the minimum (first order)
    gaps = squared_norms - ops.min(products, axis=1)
    gaps = ops.where(ops.isnan(gaps), np.inf, gaps)
    weights = ops.take(weights, ops.argmin(gaps), axis=0)
    return ops.where(finite, weights, np.nan)


def _frank_wolfe_weights(gram, max_iterations):
    num_tasks = gram.shape[0]
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


def mgda_weights(task_gradients, max_iterations=100):
    """Task weights of the minimum-norm point in the gradients' hull.

    Solves `min_{w in simplex} |sum_i w_i g_i|^2` on the Gram matrix
    `M = G G^T` divided by a power of two (`normalized_gram_matrix`: no
    overflow or underflow, and the weights do not change when the
    gradients are scaled). For two
    tasks the closed form
    `w_1 = clip(((g_2 - g_1) . g_2) / |g_1 - g_2|^2, 0, 1)`,
    `w_2 = 1 - w_1` is used. Up to `MAX_EXACT_TASKS` tasks the problem is
    solved exactly: the minimum lies in the relative interior of the face
    of some support `S`, where it is the minimum-norm point of the affine
    hull of `{g_i, i in S}` (one small linear system); the `2^T - 1`
    supports are solved at once, as one batch, and the candidate with the
    smallest Frank-Wolfe duality gap `w.Mw - min_i (Mw)_i`, zero only at
    the minimum, is kept. Beyond, Frank-Wolfe on `M`: start at `w = 1/T`,
    pick `t = argmin_i (M w)_i`, move `w <- gamma w + (1 - gamma) e_t` with
    the exact line search `gamma`, `max_iterations` times (approximate:
    it converges slowly when the minimum lies on a face).

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        max_iterations: int >= 1. Frank-Wolfe iterations (more than
            `MAX_EXACT_TASKS` tasks only).

    Returns:
        `(T,)` float32 tensor of weights on the simplex (not finite when
        a gradient is not: a NaN or inf gradient gives a non-finite
        update, which a NaN-step guard or a loss-scale optimizer skips).

    Raises:
        TypeError: if `task_gradients` are not numbers.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`, or
            `max_iterations` is not an int >= 1.

    Example:

    ```python
    mgda_weights([[1.0, 0.0], [0.0, 2.0]])  # [0.8, 0.2]
    ```

    Reference:
        Sener and Koltun, 2018, "Multi-Task Learning as Multi-Objective
        Optimization".
    """
    max_iterations = _check_iterations(max_iterations)
    gradients = check_task_gradients(task_gradients)
    num_tasks = gradients.shape[0]
    if num_tasks == 1:
        return ops.ones((1,))
    gram = normalized_gram_matrix(gradients)
    if num_tasks == 2:
        gamma = _two_vector_min_norm(gram[0, 0], gram[0, 1], gram[1, 1])
        return ops.stack([gamma, 1.0 - gamma])
    if num_tasks <= MAX_EXACT_TASKS:
        return _exact_weights(gram)
    return _frank_wolfe_weights(gram, max_iterations)


@keras.saving.register_keras_serializable(package="mtlbook")
class MGDA(GradientMethod):
    """Gradient method layer: the min-norm combination of task gradients.

    The update is `T * sum_i w_i g_i` with `w = mgda_weights(G)`; the factor
    `T` makes it equal to the gradient of the summed losses when all
    weights are `1/T`, so learning rates carry over from equal weighting.

    Args:
        max_iterations: int >= 1. Frank-Wolfe iterations for more than
            `MAX_EXACT_TASKS` tasks (see `mgda_weights`).
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: ignored (kept for a common signature).

    Returns:
        `(D,)` float32 tensor (whatever the input's float dtype).

    Reference:
        Sener and Koltun, 2018, "Multi-Task Learning as Multi-Objective
        Optimization".
    """

    def __init__(self, max_iterations=100, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.max_iterations = _check_iterations(max_iterations)

    def call(self, task_gradients, step=0):
        del step
        gradients = ops.cast(self._check_gradients(task_gradients), "float32")
        weights = mgda_weights(gradients, self.max_iterations)
        num_tasks = gradients.shape[0]
        return num_tasks * ops.matmul(weights, gradients)

    def get_config(self):
        config = super().get_config()
        config.update({"max_iterations": self.max_iterations})
        return config
