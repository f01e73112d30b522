"""CAGrad: conflict-averse gradient descent (Liu et al., 2021)."""

import math

import keras
import numpy as np
from keras import ops

from .base import (
    GradientMethod, check_task_gradients, normalized_gram_matrix,
    support_minimizers)

#: Up to this many tasks the dual problem is solved exactly, on every
#: support.
MAX_EXACT_TASKS = 10


def _check_c(c):
    if isinstance(c, bool) or not isinstance(
        c, (int, float, np.integer, np.floating)
    ) or not math.isfinite(c) or c < 0:
        raise ValueError(
            f"`c` must be a finite float >= 0. Received: c={c!r}")
    return float(c)


def _check_iterations(max_iterations):
    if isinstance(max_iterations, bool) or not isinstance(
        max_iterations, (int, np.integer)
    ) or max_iterations < 1:
        raise ValueError(
            "`max_iterations` must be an int >= 1. "
            f"Received: max_iterations={max_iterations!r}"
        )
    return int(max_iterations)


def _objective(weights, gram, gram_mean, radius):
    """`F(w) = g_w . g_0 + radius |g_w|` for rows of weights, and `|g_w|`."""
    products = ops.matmul(weights, gram)
    norms = ops.sqrt(ops.maximum(ops.sum(weights * products, axis=-1), 0.0))
    return ops.sum(weights * gram_mean, axis=-1) + radius * norms, norms


def _exact_weights(gram, gram_mean, radius):
    """CAGrad's dual weights by solving it on every support.

    On the affine hull of a support `S`, `w` is stationary for `F` when
    it is the minimum-norm point of the shifted gradients
    `g_i + tau g_0` with `tau radius = |g_w|`: that point is
    `w(tau) = w0 + tau w1` (one linear solve with two right-hand sides)
    and `tau` a root of the quadratic `radius^2 tau^2 = |g_w(tau)|^2`.
    """
    num_tasks = gram.shape[0]
    # a non-finite Gram matrix (a NaN or inf gradient) gives NaN weights;
    # the systems are solved on the identity (some backends raise on
    # non-finite entries)
    finite = ops.all(ops.isfinite(gram)) & ops.all(ops.isfinite(gram_mean))
    gram = ops.where(finite, gram, ops.eye(num_tasks))
    gram_mean = ops.where(finite, gram_mean, 1.0)
    # one solve per support (see `support_minimizers`): two right-hand
    # sides, the ones and the mean's products
    solutions = support_minimizers(gram, ops.stack(
        [ops.ones((num_tasks,)), gram_mean], axis=1))
    level = ops.max(ops.diagonal(gram))
    level = ops.where(level > 0.0, level, 1.0)
    ones_part, mean_part = solutions[:, :, 0], solutions[:, :, 1]
    ones_sum = ops.sum(ones_part, axis=1, keepdims=True)
    ones_sum = ops.where(ones_sum > 0.0, ones_sum, 1.0)
    start = ones_part / ones_sum
    slope = (ones_part * ops.sum(mean_part, axis=1, keepdims=True)
             / ones_sum - mean_part)
    start_products = ops.matmul(start, gram)
    a0 = ops.sum(start * start_products, axis=1)
    b0 = ops.sum(slope * start_products, axis=1)
    c0 = ops.sum(slope * ops.matmul(slope, gram), axis=1)
    leading = radius ** 2 - c0
    discriminant = b0 ** 2 + leading * a0
    half = b0 + ops.where(b0 >= 0.0, 1.0, -1.0) * ops.sqrt(
        ops.maximum(discriminant, 0.0))
    roots = [half / leading, -a0 / half]
    candidates = [start]
    valid = [ops.ones_like(a0) > 0.0]
    for root in roots:
        good = (discriminant >= 0.0) & (root >= 0.0) & ops.isfinite(root)
        candidates.append(start + ops.where(good, root, 0.0)[:, None] * slope)
        valid.append(good)
    weights = ops.maximum(ops.concatenate(candidates, axis=0), 0.0)
    total = ops.sum(weights, axis=1, keepdims=True)
    weights = ops.where(total > 0.0, weights / ops.where(
        total > 0.0, total, 1.0), 1.0 / num_tasks)
    valid = ops.concatenate(valid, axis=0)
    values, norms = _objective(weights, gram, gram_mean, radius)
    # first-order certificate where F is differentiable (g_w != 0): the
    # Frank-Wolfe gap; where g_w = 0, how far F is above the best value
    gradients = gram_mean[None] + radius * ops.matmul(weights, gram) / (
        ops.where(norms > 0.0, norms, 1.0)[:, None])
    gaps = ops.sum(weights * gradients, axis=1) - ops.min(gradients, axis=1)
    values = ops.where(valid & ~ops.isnan(values), values, np.inf)
    smooth = norms > 1e-3 * ops.sqrt(level)
    scores = ops.where(smooth, gaps, values - ops.min(values))
    scores = ops.where(valid & ~ops.isnan(scores), scores, np.inf)
    weights = ops.take(weights, ops.argmin(scores), axis=0)
    return ops.where(finite, weights, np.nan)


def _frank_wolfe_weights(gram, gram_mean, radius, max_iterations):
    num_tasks = gram.shape[0]
    identity = ops.eye(num_tasks)

    def step(iteration, weights):
        gram_weights = ops.matmul(gram, weights)
        norm = ops.sqrt(ops.sum(weights * gram_weights) + 1e-12)
        gradient = gram_mean + radius * gram_weights / norm
        corner = ops.take(identity, ops.argmin(gradient), axis=0)
        rate = 2.0 / (ops.cast(iteration, "float32") + 2.0)
        return (1.0 - rate) * weights + rate * corner

    mean_weights = ops.ones((num_tasks,)) / num_tasks
    return ops.fori_loop(0, max_iterations, step, mean_weights)


def cagrad_weights(task_gradients, c=0.4, max_iterations=50):
    """Simplex weights `w` of CAGrad's dual problem.

    With `g_0 = mean_i g_i`, `g_w = sum_i w_i g_i` and
    `phi = c^2 |g_0|^2`, minimises `F(w) = g_w . g_0 + sqrt(phi) |g_w|`
    over the simplex, on the Gram matrix divided by a power of two
    (`normalized_gram_matrix`: no overflow or underflow; `F` scales with
    the gradients, its minimiser does not). Up to `MAX_EXACT_TASKS`
    tasks exactly: on every support `S`, the stationary points of `F` on
    the affine hull of `S` are the minimum-norm points of the shifted
    gradients `g_i + tau g_0` with `sqrt(phi) tau = |g_w|` (a quadratic
    in `tau`); of all candidates the one with the smallest Frank-Wolfe
    duality gap is kept. Beyond, Frank-Wolfe with the step `2 / (k + 2)`,
    `max_iterations` times (approximate).

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        c: float >= 0. Radius of the ball around `g_0`.
        max_iterations: int >= 1. Frank-Wolfe iterations (more than
            `MAX_EXACT_TASKS` tasks only).

    Returns:
        `(T,)` float32 tensor of weights on the simplex (NaN when a
        gradient is not finite, up to `MAX_EXACT_TASKS` tasks).

    Raises:
        TypeError: if `task_gradients` are not numbers.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`, or
            a hyper-parameter is out of range.

    Example:

    ```python
    cagrad_weights([[1.0, 0.0], [-0.5, 1.0]], c=0.4)
    ```
    """
    c = _check_c(c)
    max_iterations = _check_iterations(max_iterations)
    gradients = check_task_gradients(task_gradients)
    num_tasks = gradients.shape[0]
    if num_tasks == 1 or c == 0.0:
        return ops.ones((num_tasks,)) / num_tasks  # the mean gradient
    return _weights_of_gram(
        normalized_gram_matrix(gradients), c, max_iterations)


def _weights_of_gram(gram, c, max_iterations):
    num_tasks = gram.shape[0]
    mean_weights = ops.ones((num_tasks,)) / num_tasks
    gram_mean = ops.matmul(gram, mean_weights)
    radius = c * ops.sqrt(ops.maximum(
        ops.sum(gram_mean * mean_weights), 0.0))
    if num_tasks <= MAX_EXACT_TASKS:
        return _exact_weights(gram, gram_mean, radius)
    return _frank_wolfe_weights(gram, gram_mean, radius, max_iterations)


def cagrad(task_gradients, c=0.4, max_iterations=50):
    """Conflict-averse update direction of CAGrad.

    `d = (g_0 + sqrt(phi) / |g_w| * g_w) / (1 + c^2)` with `w` from
    `cagrad_weights`, `g_0` the mean task gradient and
    `sqrt(phi) = c |g_0|`; the division by `1 + c^2` is the rescaling of
    the authors' code. With `c = 0` it is the mean gradient; where
    `g_w = 0` it is `g_0 / (1 + c^2)`. The norms come from the normalized
    Gram matrix (`normalized_gram_matrix`) and `d` is formed as weights
    on the gradients: the update is scale-equivariant and float32
    whatever the input's float dtype.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        c: float >= 0. Trade-off between the mean gradient (`c = 0`) and
            the worst task's improvement.
        max_iterations: int >= 1. Frank-Wolfe iterations (more than
            `MAX_EXACT_TASKS` tasks only).

    Returns:
        `(D,)` float32 tensor; not finite when a gradient is not (a NaN
        or inf gradient gives a non-finite update, which a NaN-step guard
        or a loss-scale optimizer skips).

    Raises:
        TypeError: if `task_gradients` are not numbers.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`, or
            a hyper-parameter is out of range.

    Example:

    ```python
    cagrad([[1.0, 0.0], [-0.5, 1.0]], c=0.4)
    ```

    Reference:
        Liu, Liu, Jin, Stone and Liu, 2021, "Conflict-Averse Gradient
        Descent for Multi-task Learning".
    """
    c = _check_c(c)
    max_iterations = _check_iterations(max_iterations)
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    num_tasks = gradients.shape[0]
    mean_weights = ops.ones((num_tasks,)) / num_tasks
    if num_tasks == 1 or c == 0.0:
        return ops.matmul(mean_weights, gradients) / (1.0 + c ** 2)
    # d = g_0 + c |g_0| / |g_w| g_w, the norms from the normalized Gram
    # matrix (no overflow), applied to the gradients as weights
    gram = normalized_gram_matrix(gradients)
    weights = _weights_of_gram(gram, c, max_iterations)
    mean_norm = ops.sqrt(ops.maximum(
        ops.sum(mean_weights * ops.matmul(gram, mean_weights)), 0.0))
    combined_norm = ops.sqrt(ops.maximum(
        ops.sum(weights * ops.matmul(gram, weights)), 0.0))
    factor = c * mean_norm / ops.where(
        combined_norm > 0.0, combined_norm, 1.0)
    factor = ops.where(combined_norm > 0.0, factor, 0.0)
    update_weights = (mean_weights + factor * weights) / (1.0 + c ** 2)
    return ops.matmul(update_weights, gradients)


@keras.saving.register_keras_serializable(package="mtlbook")
class CAGrad(GradientMethod):
    """Gradient method layer around `cagrad`.

    The update is `T * cagrad(G, c)`: CAGrad works with the *mean*
    gradient, and the factor `T` puts it on the scale of the summed losses
    of equal weighting, so learning rates carry over.

    Args:
        c: float >= 0. See `cagrad` (0.4 in the paper's multi-task
            experiments).
        max_iterations: int >= 1. Frank-Wolfe iterations for more than
            `MAX_EXACT_TASKS` tasks (see `cagrad_weights`).
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: ignored (kept for a common signature).

    Returns:
        `(D,)` float32 tensor.

    Reference:
        Liu et al., 2021, "Conflict-Averse Gradient Descent for Multi-task
        Learning".
    """

    def __init__(self, c=0.4, max_iterations=50, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.c = _check_c(c)
        self.max_iterations = _check_iterations(max_iterations)

    def call(self, task_gradients, step=0):
        del step
        gradients = self._check_gradients(task_gradients)
        num_tasks = gradients.shape[0]
        return num_tasks * cagrad(gradients, self.c, self.max_iterations)

    def get_config(self):
        config = super().get_config()
        config.update({"c": self.c, "max_iterations": self.max_iterations})
        return config
