"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., 2022).

The tasks bargain over the update `d = sum_i alpha_i g_i`: the Nash
bargaining solution maximises `sum_i log(g_i . d)` on a ball, and its
weights `alpha > 0` solve `(G G^T alpha)_i = 1 / alpha_i` for every task
`i`. They are the minimiser of the strictly convex
`f(alpha) = 1/2 alpha^T G G^T alpha - sum_i log alpha_i`, which this
module finds with a damped Newton method on `T x T` matrices (no convex
solver). The paper's code solves the same equation with a sequence of
convex approximations (cvxpy) and then clips the update's norm to
`max_norm`.
"""

import math

import keras
import numpy as np
from keras import ops

from .base import (
    GradientMethod, check_task_gradients, normalized_gram_matrix,
    scale_task_gradients)


def _check_nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ) or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite float >= 0. "
            f"Received: {name}={value!r}")
    return float(value)


def _check_positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, np.integer)
    ) or value < 1:
        raise ValueError(
            f"`{name}` must be an int >= 1. Received: {name}={value!r}")
    return int(value)


def _unit_rows(gradients):
    """Rows scaled by powers of two, their norms and their cosine matrix.

    Each row `g_i` is divided by its own power of two `p_i`
    (`scale_task_gradients`), so the `T x T` products neither overflow
    nor underflow whatever the rows' scales. Returns `(rows, norms,
    cosine)`: `rows[i] = g_i / p_i`, `norms[i] = |rows[i]|` (0 for a zero
    row) and `cosine[i, j] = rows[i] . rows[j] / (norms[i] norms[j])`
    with a unit diagonal (a zero row is orthogonal to every other).
    """
    num_tasks = gradients.shape[0]
    rows = ops.concatenate([
        scale_task_gradients(gradients[i:i + 1])[0]
        for i in range(num_tasks)], axis=0)
    gram = normalized_gram_matrix(rows)
    diagonal = ops.diagonal(gram)
    root = ops.sqrt(ops.where(diagonal > 0.0, diagonal, 1.0))
    identity = ops.eye(num_tasks)
    cosine = gram / (root[:, None] * root[None, :])
    cosine = identity + (1.0 - identity) * cosine
    # |rows[i]| itself: the normalized Gram matrix is divided by a power
    # of two, the norms are not
    norms = ops.sqrt(ops.sum(ops.square(rows), axis=1))
    return rows, norms, cosine


def _newton(cosine, ridge, iterations):
    """Minimises `1/2 b^T (C + ridge I) b - sum_i log b_i` over `b > 0`.

    Newton steps on the relative change `y = step / b`: with
    `B = diag(b)`, `(B (C + ridge I) B + I) y = -r`, `r_i = b_i
    ((C + ridge I) b)_i - 1` the residual of the fixed point. The step
    length is the best (smallest `f`) of `1 / (1 + delta)` (the damped
    step of self-concordant functions: it always lowers `f` and keeps
    `b > 0`; `delta` is the Newton decrement) and `1/2, 1, 2, 4` where
    those keep `b > 0`; once `delta < 1/4` it is the full step (quadratic
    convergence). The start is the all-equal `b` that is best on its ray.
    """
    num_tasks = cosine.shape[0]
    identity = ops.eye(num_tasks)
    # the ridge is kept apart from the unit diagonal: 1 + ridge would
    # lose its digits in float32
    start = ops.sqrt(num_tasks / (ops.sum(cosine) + ridge * num_tasks))
    start = start * ops.ones((num_tasks,))
    lengths = ops.convert_to_tensor([0.0, 0.5, 1.0, 2.0, 4.0])

    def objective(candidates):
        products = ops.matmul(candidates, cosine) + ridge * candidates
        return 0.5 * ops.sum(candidates * products, axis=-1) - ops.sum(
            ops.log(candidates), axis=-1)

    def step(iteration, b):
        del iteration
        products = ops.matmul(cosine, b) + ridge * b
        residual = b * products - 1.0
        system = (b[:, None] * cosine * b[None, :]
                  + (1.0 + ridge * b * b)[:, None] * identity)
        relative = -ops.solve(system, residual[:, None])[:, 0]
        decrement = ops.sqrt(ops.maximum(-ops.sum(residual * relative), 0.0))
        damped = 1.0 / (1.0 + decrement)
        tries = ops.where(lengths > 0.0, lengths, damped)
        factors = 1.0 + tries[:, None] * relative[None, :]
        feasible = ops.all(factors > 0.0, axis=1)
        candidates = b[None, :] * ops.where(factors > 0.0, factors, 1.0)
        values = ops.where(feasible, objective(candidates), np.inf)
        values = ops.where(ops.isnan(values), np.inf, values)
        length = ops.take(tries, ops.argmin(values))
        length = ops.where(decrement < 0.25, 1.0, length)
        return b * (1.0 + length * relative)

    return ops.fori_loop(0, iterations, step, start)


def _bargaining(gradients, ridge, iterations):
    """`(rows, w, alpha)`: `sum_i w_i rows[i] = sum_i alpha_i g_i`."""
    rows, norms, cosine = _unit_rows(gradients)
    # a NaN or inf gradient: solve on the identity, return NaN
    finite = ops.all(ops.isfinite(cosine)) & ops.all(ops.isfinite(norms))
    cosine = ops.where(finite, cosine, ops.eye(cosine.shape[0]))
    unit = _newton(cosine, ridge, iterations)
    present = norms > 0.0
    safe_norms = ops.where(present, norms, 1.0)
    row_weights = ops.where(present, unit / safe_norms, 0.0)
    row_weights = ops.where(finite, row_weights, np.nan)
    # alpha_i = unit_i / |g_i|, with |g_i| = p_i |rows[i]|
    powers = ops.max(ops.abs(gradients), axis=1) / ops.where(
        present, ops.max(ops.abs(rows), axis=1), 1.0)
    alpha = row_weights / ops.where(present, powers, 1.0)
    return rows, row_weights, alpha


def nash_mtl_weights(task_gradients, ridge=1e-4, iterations=40):
    """The Nash bargaining weights `alpha` of the task gradients.

    With `M = G G^T`, `alpha > 0` solves `(M alpha)_i = 1 / alpha_i`, the
    minimiser of `f(alpha) = 1/2 alpha^T M alpha - sum_i log alpha_i`.
    The solution is invariant to each task's scale in this sense: with
    `g_i` multiplied by `s_i > 0`, `alpha_i` is divided by `s_i` and
    `alpha_i g_i` is unchanged. So it is computed on unit gradients: with
    `u_i = g_i / |g_i|` and the cosine matrix `C = U U^T`, `b` minimises
    `1/2 b^T (C + ridge I) b - sum_i log b_i` (Newton's method,
    `iterations` steps) and `alpha_i = b_i / |g_i|`; in `M`'s terms,
    `alpha` solves `((M + ridge diag(|g_i|^2)) alpha)_i = 1 / alpha_i`.

    The ridge is what keeps a solution when there is none: when zero is
    a positive combination of the gradients (two opposite gradients), no
    direction improves every task and `f` decreases without bound; with
    the ridge the weights stay finite (`b_i <= 1 / sqrt(ridge)`) and
    `sum_i alpha_i g_i` shrinks to zero there. Elsewhere it moves the
    solution by about `ridge`. A task with a zero gradient gets
    `alpha_i = 0` (it has no stake in the direction); the others bargain
    as if it were absent. Each row is divided by its own power of two
    before any product (no overflow or underflow from `1e-30` to `1e30`,
    different scales per task included); computed in float32.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        ridge: float >= 0. Added to the cosine matrix's diagonal. In
            float32 a cosine near -1 is off by about `6e-8`; with the
            default `1e-4` that moves the update by at most about `1e-5`.
            0 only when the gradients are known to be linearly
            independent.
        iterations: int >= 1. Newton steps. Linearly independent
            gradients need about 5; six tasks whose gradients lie in a
            plane (weights near `1 / sqrt(ridge)`) needed more than 20
            in the tests; 40 reached float32 precision on every test
            case.

    Returns:
        `(T,)` float32 tensor `alpha` (NaN when a gradient is not finite).

    Raises:
        TypeError: if `task_gradients` are not numbers.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`, or
            a hyper-parameter is out of range.

    Example:

    ```python
    nash_mtl_weights([[1.0, 0.0], [0.0, 2.0]])  # about [1.0, 0.5]
    ```

    Reference:
        Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya,
        2022, "Multi-Task Learning as a Bargaining Game".
    """
    ridge = _check_nonnegative("ridge", ridge)
    iterations = _check_positive_int("iterations", iterations)
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    return _bargaining(gradients, ridge, iterations)[2]


def _clip(update, max_norm):
    """`update * min(1, max_norm / |update|)`; `max_norm = 0`: unchanged."""
    if max_norm == 0.0:
        return update
    largest = ops.max(ops.abs(update))
    safe = ops.where(largest > 0.0, largest, 1.0)
    norm = safe * ops.sqrt(ops.sum(ops.square(update / safe)))
    factor = ops.minimum(1.0, max_norm / ops.where(norm > 0.0, norm, 1.0))
    return update * ops.where(ops.isfinite(norm), factor, norm)


def nash_mtl(task_gradients, max_norm=1.0, ridge=1e-4, iterations=40):
    """The Nash-MTL update `d = sum_i alpha_i g_i`, its norm clipped.

    `alpha = nash_mtl_weights(G)`. At the solution `|d|^2 = alpha^T M
    alpha = T` (less with the ridge): the update has norm `sqrt(T)`
    whatever the gradients' scales, and scaling any task's gradient by
    `s > 0` leaves `d` unchanged (scale invariance, not equivariance:
    the step size is the learning rate's). With `max_norm > 0`, `d` is
    then multiplied by `min(1, max_norm / |d|)`, as the authors' code
    clips the shared parameters' gradient (`max_norm = 1` there). Formed
    as weights on the row-scaled gradients: float32 whatever the input's
    float dtype.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        max_norm: float >= 0. Largest norm of the update; 0: no clipping.
        ridge: float >= 0. See `nash_mtl_weights`.
        iterations: int >= 1. See `nash_mtl_weights`.

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
    nash_mtl([[1.0, 0.0], [0.0, 2.0]], max_norm=0.0)  # about [1.0, 1.0]
    ```

    Reference:
        Navon et al., 2022, "Multi-Task Learning as a Bargaining Game".
    """
    max_norm = _check_nonnegative("max_norm", max_norm)
    ridge = _check_nonnegative("ridge", ridge)
    iterations = _check_positive_int("iterations", iterations)
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    rows, row_weights, _ = _bargaining(gradients, ridge, iterations)
    return _clip(ops.matmul(row_weights, rows), max_norm)


@keras.saving.register_keras_serializable(package="mtlbook")
class NashMTL(GradientMethod):
    """Gradient method layer around `nash_mtl`, with the weights as state.

    Every `update_weights_every` steps (when `step` is a multiple of it)
    the weights are solved anew, `alpha = nash_mtl_weights(G)`, and kept
    in the variable `alpha` (saved in `.keras` files, restored by
    `BackupAndRestore`); in between the kept weights are reused,
    `d = sum_i alpha_i g_i`, as in the authors' code. Then `d` is clipped
    to `max_norm`. New weights that are not finite (a NaN or inf
    gradient) are not kept: that step's update is not finite (a NaN-step
    guard skips it) and the next steps reuse the previous weights.
    `task_weights()` returns `alpha` (ones before the first solve).

    Args:
        max_norm: float >= 0. Largest norm of the update (1 in the
            authors' code); 0: no clipping.
        update_weights_every: int >= 1. Steps between two solves.
        ridge: float >= 0. See `nash_mtl_weights`.
        iterations: int >= 1. Newton steps (see `nash_mtl_weights`).
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: integer scalar, the training step (the optimizer's
            `iterations`): weights are solved when it is a multiple of
            `update_weights_every`.

    Returns:
        `(D,)` float32 tensor.

    Example:

    ```python
    model = MultiTaskModel(network, tasks, strategy=NashMTL())
    ```

    Reference:
        Navon et al., 2022, "Multi-Task Learning as a Bargaining Game".
    """

    def __init__(self, max_norm=1.0, update_weights_every=1, ridge=1e-4,
                 iterations=40, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.max_norm = _check_nonnegative("max_norm", max_norm)
        self.update_weights_every = _check_positive_int(
            "update_weights_every", update_weights_every)
        self.ridge = _check_nonnegative("ridge", ridge)
        self.iterations = _check_positive_int("iterations", iterations)

    def build(self, input_shape):
        super().build(input_shape)
        self.alpha = self.add_weight(
            name="alpha", shape=(self.num_tasks,), initializer="ones",
            trainable=False, aggregation="only_first_replica")

    def task_weights(self):
        """Returns the current weights `alpha`, `(T,)`."""
        return ops.convert_to_tensor(self.alpha)

    def call(self, task_gradients, step=0):
        gradients = ops.cast(self._check_gradients(task_gradients),
                             "float32")
        previous = ops.convert_to_tensor(self.alpha)

        def solve():
            rows, row_weights, alpha = _bargaining(
                gradients, self.ridge, self.iterations)
            return ops.matmul(row_weights, rows), alpha

        def reuse():
            return ops.matmul(previous, gradients), previous

        if self.update_weights_every == 1:
            update, alpha = solve()
        else:
            due = ops.equal(
                ops.mod(ops.cast(step, "int64"), self.update_weights_every),
                0)
            update, alpha = ops.cond(due, solve, reuse)
        self.alpha.assign(ops.where(
            ops.all(ops.isfinite(alpha)), alpha, previous))
        return _clip(update, self.max_norm)

    def get_config(self):
        config = super().get_config()
        config.update({
            "max_norm": self.max_norm,
            "update_weights_every": self.update_weights_every,
            "ridge": self.ridge,
            "iterations": self.iterations,
        })
        return config
