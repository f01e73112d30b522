"""Aligned-MTL: aligning the principal components of the task gradients."""

import math

import keras
import numpy as np
from keras import ops

from .base import (
    GradientMethod, check_task_gradients, normalized_gram_matrix)

#: The scales of the aligned gradients offered by the authors' code.
SCALE_MODES = ("min", "median", "rmse")


def _check_scale_mode(scale_mode):
    if not isinstance(scale_mode, str) or scale_mode not in SCALE_MODES:
        raise ValueError(
            f"`scale_mode` must be one of {SCALE_MODES}. "
            f"Received: scale_mode={scale_mode!r}"
        )
    return scale_mode


def _check_task_weights(task_weights, num_tasks=None):
    """`None`, or a list of `num_tasks` finite floats (not bools)."""
    if task_weights is None:
        return None
    expected = "`task_weights` must be None or a sequence of finite floats"
    if num_tasks is not None:
        expected += f", one per task ({num_tasks})"
    try:
        values = list(task_weights)
    except TypeError:  # not iterable: an int, a bool, ...
        values = None
    if values is None or isinstance(task_weights, (str, bytes)) or any(
        isinstance(v, (bool, np.bool_))
        or not isinstance(v, (int, float, np.integer, np.floating))
        or not math.isfinite(v) for v in values
    ) or not values or (num_tasks is not None and len(values) != num_tasks):
        raise ValueError(
            f"{expected}. Received: task_weights={task_weights!r}")
    return [float(v) for v in values]


def _balance_matrix(gram, scale_mode):
    """`B = sigma V_r Lambda_r^(-1/2) V_r^T` of a Gram matrix; see
    `aligned_mtl_weights`. A non-finite `gram` gives NaN."""
    num_tasks = gram.shape[0]
    finite = ops.all(ops.isfinite(gram))
    # some backends raise on non-finite entries: decompose the identity
    gram = ops.where(finite, gram, ops.eye(num_tasks))
    eigenvalues, eigenvectors = ops.eigh(gram)  # ascending
    tolerance = (ops.max(eigenvalues) * num_tasks
                 * float(np.finfo("float32").eps))
    kept = eigenvalues > tolerance
    rank = ops.sum(ops.cast(kept, "int32"))
    safe = ops.where(kept, eigenvalues, 1.0)
    if scale_mode == "min":
        level = ops.min(ops.where(kept, eigenvalues, np.inf))
    elif scale_mode == "median":
        # the kept eigenvalues are the `rank` largest; the lower median
        # of them, as `torch.median`
        index = num_tasks - rank + (rank - 1) // 2
        level = ops.take(eigenvalues, ops.maximum(index, 0))
    else:
        level = ops.sum(ops.where(kept, eigenvalues, 0.0)) / ops.cast(
            ops.maximum(rank, 1), "float32")
    level = ops.where(rank > 0, level, 0.0)
    factors = ops.where(kept, ops.sqrt(level) / ops.sqrt(safe), 0.0)
    balance = ops.matmul(eigenvectors * factors[None, :],
                         ops.transpose(eigenvectors))
    return ops.where(finite, balance, np.nan)


def aligned_mtl_weights(task_gradients, task_weights=None, scale_mode="min"):
    """Weights `c = B w` with `aligned_mtl(G, w) = sum_i c_i g_i`.

    With the Gram matrix `M = G G^T = V Lambda V^T` (eigenvalues
    `lambda_1 >= ... >= lambda_T`), the aligned gradients are the rows of
    `B G`, `B = sigma V_r Lambda_r^(-1/2) V_r^T`: the singular values of
    `B G` all equal `sigma` (its rows are orthogonal and of one length,
    the condition number of the aligned system is 1). As in the authors'
    code, only the `r` eigenpairs with
    `lambda_k > T * eps_float32 * lambda_1` are kept (`V_r`, `Lambda_r`):
    directions in which the gradients are linearly dependent (a zero
    gradient, duplicated or opposite gradients, more tasks than
    dimensions) get the weight 0, and all-zero gradients give `B = 0`.
    `sigma` is `sqrt(lambda_r)` (the smallest kept eigenvalue, the paper's
    choice, `scale_mode="min"`), the square root of the lower median of
    the kept eigenvalues (`"median"`) or of their mean (`"rmse"`).
    Computed on the Gram matrix divided by a power of two
    (`normalized_gram_matrix`): `B` does not change when the gradients
    are scaled.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        task_weights: None (every `w_i = 1 / T`) or a sequence of `T`
            finite floats, the weights `w` of the aligned gradients.
        scale_mode: `"min"`, `"median"` or `"rmse"`, see above.

    Returns:
        `(T,)` float32 tensor `c = B w` (NaN when a gradient is not
        finite).

    Raises:
        TypeError: if `task_gradients` are not numbers.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`,
            `task_weights` has not `T` finite entries or `scale_mode` is
            unknown.

    Example:

    ```python
    aligned_mtl_weights([[1.0, 0.0], [0.0, 2.0]])  # [0.5, 0.25]
    ```
    """
    scale_mode = _check_scale_mode(scale_mode)
    gradients = check_task_gradients(task_gradients)
    num_tasks = gradients.shape[0]
    task_weights = _check_task_weights(task_weights, num_tasks)
    if task_weights is None:
        task_weights = [1.0 / num_tasks] * num_tasks
    balance = _balance_matrix(normalized_gram_matrix(gradients), scale_mode)
    return ops.matmul(balance, ops.convert_to_tensor(task_weights, "float32"))


def aligned_mtl(task_gradients, task_weights=None, scale_mode="min"):
    """Update direction of Aligned-MTL: `d = G^T B w`.

    `B G` are the aligned task gradients (see `aligned_mtl_weights`) and
    `w` the task weights: `d = sum_i c_i g_i` with `c = B w`. Formed as
    weights on the gradients, in float32 whatever the input's float
    dtype; scale-equivariant (the gradients scaled by `s`, `d` is scaled
    by `s`).

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        task_weights: None (every `w_i = 1 / T`) or a sequence of `T`
            finite floats.
        scale_mode: `"min"` (the paper), `"median"` or `"rmse"`.

    Returns:
        `(D,)` float32 tensor; not finite when a gradient is not (which a
        NaN-step guard or a loss-scale optimizer skips).

    Raises:
        TypeError: if `task_gradients` are not numbers.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`,
            `task_weights` has not `T` finite entries or `scale_mode` is
            unknown.

    Example:

    ```python
    aligned_mtl([[1.0, 0.0], [0.0, 2.0]])  # [0.5, 0.5]
    ```

    Reference:
        Senushkin, Patakin, Kuznetsov and Konushin, 2023, "Independent
        Component Alignment for Multi-Task Learning".
    """
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    weights = aligned_mtl_weights(gradients, task_weights, scale_mode)
    return ops.matmul(weights, gradients)


@keras.saving.register_keras_serializable(package="mtlbook")
class AlignedMTL(GradientMethod):
    """Gradient method layer around `aligned_mtl`.

    The update is `G^T B w` with `w = task_weights`, by default every
    `w_i = 1`: the sum of the aligned gradients, as in the authors' code
    (and on the scale of the summed losses of equal weighting, so
    learning rates carry over).

    Args:
        task_weights: None (all ones) or a sequence of `T` finite floats.
        scale_mode: `"min"` (the paper), `"median"` or `"rmse"`; see
            `aligned_mtl_weights`.
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: ignored (kept for a common signature).

    Returns:
        `(D,)` float32 tensor.

    Example:

    ```python
    model = MultiTaskModel(inputs, outputs, strategy=AlignedMTL())
    ```

    Reference:
        Senushkin et al., 2023, "Independent Component Alignment for
        Multi-Task Learning".
    """

    def __init__(self, task_weights=None, scale_mode="min", num_tasks=None,
                 **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.task_weight_values = _check_task_weights(task_weights, num_tasks)
        self.scale_mode = _check_scale_mode(scale_mode)

    def build(self, input_shape):
        _check_task_weights(self.task_weight_values, int(input_shape[0]))
        super().build(input_shape)

    def call(self, task_gradients, step=0):
        del step
        gradients = self._check_gradients(task_gradients)
        num_tasks = gradients.shape[0]
        weights = self.task_weight_values or [1.0] * num_tasks
        return aligned_mtl(gradients, weights, self.scale_mode)

    def get_config(self):
        config = super().get_config()
        config.update({"task_weights": self.task_weight_values,
                       "scale_mode": self.scale_mode})
        return config
