"""IMTL-G: impartial multi-task learning, the gradient part (Liu et al.)."""

import keras
import numpy as np
from keras import ops

from .base import (
    GradientMethod, check_task_gradients, normalized_gram_matrix)


def _weights_of_gram(gram):
    """`imtl_weights` from the (normalized) Gram matrix."""
    num_tasks = gram.shape[0]
    finite = ops.all(ops.isfinite(gram))
    # some backends raise on non-finite entries: decompose the identity
    gram = ops.where(finite, gram, ops.eye(num_tasks))
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    eigenvalues, eigenvectors = ops.eigh(gram)
    tolerance = (ops.max(eigenvalues) * num_tasks
                 * float(np.finfo("float32").eps))
    kept = eigenvalues > tolerance
    coordinates = ops.matmul(norms, eigenvectors)  # V^T n
    safe = ops.where(kept, eigenvalues, 1.0)
    in_range = ops.matmul(
        eigenvectors, ops.where(kept, coordinates / safe, 0.0))
    in_null = ops.matmul(eigenvectors, ops.where(kept, 0.0, coordinates))
    # n outside the range of M (beyond float32 noise): the limit of the
    # ridge solution is its part in the null space
    outside = ops.sum(in_null ** 2) > 1e-6 * ops.sum(norms ** 2)
    weights = ops.where(outside, in_null, in_range)
    total = ops.sum(weights)
    weights = ops.where(
        total != 0.0, weights / ops.where(total != 0.0, total, 1.0),
        1.0 / num_tasks)
    return ops.where(finite, weights, np.nan)


def imtl_weights(task_gradients):
    """Weights `alpha` of IMTL-G's update `d = sum_i alpha_i g_i`.

    IMTL-G asks for the combination `d = sum_i alpha_i g_i`,
    `sum_i alpha_i = 1`, whose projections `d . u_i` on every unit
    gradient `u_i = g_i / |g_i|` are equal. The paper's closed form takes
    task 1 as reference: with the rows `D_t = g_1 - g_t` and
    `U_t = u_1 - u_t` (`t >= 2`),
    `alpha_{2:T} = g_1 U^T (D U^T)^-1` and
    `alpha_1 = 1 - sum_t alpha_t`. The same solution in Gram terms: with
    `M = G G^T` and `n_i = |g_i|`, the conditions read `M alpha = c n`,
    so `alpha = M^-1 n / (1^T M^-1 n)` (`c`, the common projection, is
    `1 / (1^T M^-1 n)`). It is computed so, from the eigendecomposition
    `M = V Lambda V^T` of the Gram matrix divided by a power of two
    (`normalized_gram_matrix`: the weights do not change when the
    gradients are scaled).

    Linearly dependent gradients (a singular `M`; eigenvalues at most
    `T * eps_float32 * lambda_max` count as zero, as in Aligned-MTL's
    code) get the limit of the ridge solution `(M + delta I)^-1 n` as
    `delta -> 0`, normalized to sum 1: the pseudo-inverse solution
    `M^+ n` when `n` lies in the range of `M` (a zero gradient gets
    `alpha_i = 0` and the others are solved among themselves;
    duplicated gradients share their weight equally), otherwise the part
    of `n` in the null space of `M` (opposite gradients, `g_2 = -s g_1`:
    `alpha = (s, 1) / (1 + s)` and `d = 0`, the only combination with
    equal projections); `n` counts as outside the range when that part
    holds more than `1e-6` of `|n|^2`. All-zero gradients get
    `alpha_i = 1 / T`.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.

    Returns:
        `(T,)` float32 tensor summing to 1 (NaN when a gradient is not
        finite). Entries may be negative.

    Raises:
        TypeError: if `task_gradients` are not numbers.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`.

    Example:

    ```python
    imtl_weights([[1.0, 0.0], [0.0, 2.0]])  # [2/3, 1/3]
    ```
    """
    gradients = check_task_gradients(task_gradients)
    return _weights_of_gram(normalized_gram_matrix(gradients))


def imtl_g(task_gradients):
    """Update direction of IMTL-G: `d = sum_i alpha_i g_i`.

    `alpha` from `imtl_weights`: `sum_i alpha_i = 1` and `d` has the same
    projection `d . g_i / |g_i|` on every (non-zero) task gradient, no
    task is favoured. Formed as weights on the gradients, in float32
    whatever the input's float dtype; scale-equivariant.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.

    Returns:
        `(D,)` float32 tensor; not finite when a gradient is not (which a
        NaN-step guard or a loss-scale optimizer skips).

    Raises:
        TypeError: if `task_gradients` are not numbers.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`.

    Example:

    ```python
    imtl_g([[1.0, 0.0], [0.0, 2.0]])  # [2/3, 2/3]
    ```

    Reference:
        Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, 2021, "Towards
        Impartial Multi-task Learning" (ICLR).
    """
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    weights = _weights_of_gram(normalized_gram_matrix(gradients))
    return ops.matmul(weights, gradients)


@keras.saving.register_keras_serializable(package="mtlbook")
class IMTLG(GradientMethod):
    """Gradient method layer around `imtl_g`.

    The update is `T * imtl_g(G)`: IMTL-G's weights sum to 1, and the
    factor `T` puts the update on the scale of the summed losses of equal
    weighting (as `MGDA` and `CAGrad`), so learning rates carry over.

    Args:
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: ignored (kept for a common signature).

    Returns:
        `(D,)` float32 tensor.

    Example:

    ```python
    model = MultiTaskModel(inputs, outputs, strategy=IMTLG())
    ```

    Reference:
        Liu et al., 2021, "Towards Impartial Multi-task Learning".
    """

    def call(self, task_gradients, step=0):
        del step
        gradients = self._check_gradients(task_gradients)
        return gradients.shape[0] * imtl_g(gradients)
