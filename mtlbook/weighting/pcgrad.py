"""PCGrad: projecting conflicting gradients (Yu et al., 2020)."""

import keras
import numpy as np
from keras import ops

from .base import (
    GradientMethod, check_task_gradients, normalized_gram_matrix)


def _mix(value):
    """A 32-bit integer hash (Wellons' "lowbias32"): `uint32 -> uint32`.

    Every operand is a uint32 tensor (Keras 3.9 promotes a uint32 tensor
    and a Python int to int64).
    """
    value = ops.bitwise_xor(value, _shifted(value, 16))
    value = value * ops.convert_to_tensor(0x7FEB352D, "uint32")
    value = ops.bitwise_xor(value, _shifted(value, 15))
    value = value * ops.convert_to_tensor(0x846CA68B, "uint32")
    return ops.bitwise_xor(value, _shifted(value, 16))


def _shifted(value, bits):
    return ops.right_shift(value, ops.convert_to_tensor(bits, "uint32"))


def _check_integer(name, value, allow_none=False):
    """Raises `TypeError` unless `value` is an int or integer scalar tensor.

    Python values must be ints (not bools: `True` is no seed); integer
    tensors and variables of rank 0 (the optimizer's step counter inside
    a compiled train step) pass as they are.
    """
    if value is None and allow_none:
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    ):
        return value
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    if dtype is not None and shape is not None and not isinstance(
        value, (str, bytes)
    ):
        dtype = keras.backend.standardize_dtype(dtype)
        if dtype.startswith(("int", "uint")) and len(shape) == 0:
            return value
    expected = "an int" + (" or None" if allow_none else "")
    raise TypeError(
        f"`{name}` must be {expected} (or an integer scalar tensor). "
        f"Received: {name}={value!r}"
    )


def task_order(num_tasks, seed=None, step=0):
    """A random order of `num_tasks` tasks, a pure function of the seeds.

    With an int `seed`, task `i` gets the key `h(h(seed + h(step)) + i)`,
    `h` a 32-bit integer hash, and the order sorts the keys: the same
    `(seed, step)` gives the same order on every backend, on every replica
    and in a resumed run, and `step` may be a tensor (the optimizer's step
    counter inside a compiled train step).

    Args:
        num_tasks: int >= 1.
        seed: None (a fresh order from Keras's global random state) or an
            int (or integer scalar tensor); not a bool.
        step: int or integer scalar tensor, e.g. the training step; not
            a bool.

    Returns:
        `(num_tasks,)` int32 tensor, a permutation of `0 .. num_tasks - 1`.

    Example:

    ```python
    task_order(4, seed=0, step=7)  # the same 4 indices every time
    ```
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or (
        num_tasks < 1
    ):
        raise ValueError(
            f"`num_tasks` must be a positive int. Received: "
            f"num_tasks={num_tasks!r}"
        )
    _check_integer("seed", seed, allow_none=True)
    _check_integer("step", step)
    if seed is None:
        return ops.cast(
            ops.argsort(keras.random.uniform((num_tasks,))), "int32")
    base = ops.cast(seed, "uint32") + _mix(ops.cast(step, "uint32"))
    index = ops.cast(ops.arange(num_tasks, dtype="int32"), "uint32")
    keys = _mix(_mix(base) + index)
    # 24 high bits as int32 (argsort of unsigned ints is not on every backend)
    return ops.cast(
        ops.argsort(ops.cast(_shifted(keys, 8), "int32")), "int32")


def pcgrad_weights(task_gradients, seed=None, step=0):
    """Weights `w` with `pcgrad(G) = sum_j w_j g_j`.

    Every projected gradient stays a combination of the original ones,
    `p_i = sum_j A_ij g_j`, so PCGrad runs on the `T x T` Gram matrix
    `M = G G^T` (`p_i . g_j = (A M)_ij`) and touches the `D`-dimensional
    gradients only to form `M` and the final sum: its cost is one `(T, D)`
    matrix product, not `T^2` passes over `D` entries. The Gram matrix is
    divided by a power of two (`normalized_gram_matrix`, from scaled
    gradients where needed), so `M` neither overflows nor underflows and
    the weights do not change when the gradients are scaled; a task with
    a zero gradient is never projected on.

    Args:
        task_gradients: `(T, D)` tensor of per-task gradients.
        seed, step: the task order, see `task_order`.

    Returns:
        `(T,)` float32 tensor, `w_j = sum_i A_ij`.

    Raises:
        TypeError: if `task_gradients` are not numbers, or `seed` or
            `step` is no int.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`.
    """
    _check_integer("seed", seed, allow_none=True)
    _check_integer("step", step)
    gram = normalized_gram_matrix(task_gradients)
    return _weights_of_gram(gram, seed, step)


def _weights_of_gram(gram, seed, step):
    """`pcgrad_weights` from the (normalized) Gram matrix."""
    num_tasks = gram.shape[0]
    identity = ops.eye(num_tasks)
    task_index = ops.arange(num_tasks, dtype="int32")
    if num_tasks <= 2:
        # each task projects on the other's original gradient only: every
        # order gives the same update, so none is drawn
        order = list(range(num_tasks))
    else:
        order = task_order(num_tasks, seed, step)
    combination = identity  # row i: p_i in the basis of the g_j
    for position in range(num_tasks):
        other = order[position]
        dots = ops.matmul(combination, ops.take(gram, other, axis=1))
        squared_norm = ops.take(ops.diagonal(gram), other)
        coefficient = ops.minimum(dots, 0.0) / ops.where(
            squared_norm > 0.0, squared_norm, 1.0)
        # a zero row has a zero column in `gram`: its coefficients are 0
        coefficient = ops.where(task_index == other, 0.0, coefficient)
        corner = ops.take(identity, other, axis=0)
        combination = combination - coefficient[:, None] * corner[None, :]
    return ops.sum(combination, axis=0)


def pcgrad(task_gradients, seed=None, step=0):
    """Projects each task gradient away from the ones it conflicts with.

    One random order `o` of the tasks is drawn per call (`task_order`).
    For each task `i`, `p_i` starts at `g_i`; then for every other task `j`
    in order `o`, if `p_i . g_j < 0` (conflict with task `j`'s *original*
    gradient), `p_i <- p_i - (p_i . g_j) / |g_j|^2 * g_j`. The update is
    `sum_i p_i`. Gradients that do not conflict pass unchanged. Computed on
    the Gram matrix (`pcgrad_weights`), in float32: the result is float32
    whatever the input's float dtype (a float16 input is not cast back,
    where the sum of the projected gradients could overflow).

    Args:
        task_gradients: `(T, D)` tensor, row `i` the flattened gradient of
            task `i`'s loss with respect to the shared parameters.
        seed: None (a fresh random order) or an int: with `step`, the
            stateless seed of the order.
        step: int or integer tensor (e.g. the training step).

    Returns:
        `(D,)` float32 tensor, the summed projected gradients.

    Example:

    ```python
    pcgrad([[1.0, 0.0], [-1.0, 1.0]])  # [0.5, 1.5]
    ```

    Raises:
        TypeError: if `task_gradients` are not numbers, or `seed` or
            `step` is no int.
        ValueError: if `task_gradients` is not `(T, D)` with `T >= 1`.

    Reference:
        Yu et al., 2020, "Gradient Surgery for Multi-Task Learning".
    """
    _check_integer("seed", seed, allow_none=True)
    _check_integer("step", step)
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    weights = _weights_of_gram(normalized_gram_matrix(gradients), seed, step)
    return ops.matmul(weights, gradients)


@keras.saving.register_keras_serializable(package="mtlbook")
class PCGrad(GradientMethod):
    """Gradient method layer around `pcgrad`.

    The random task order is drawn from the stateless seeds
    `(seed, step)`, so that a run (and a resumed run) is repeatable and all
    replicas of a distributed run draw the same order.

    Args:
        seed: int. Seed of the task order.
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_gradients: `(T, D)` tensor of per-task gradients.
        step: integer scalar, the training step.

    Returns:
        `(D,)` tensor, `pcgrad(task_gradients, seed, step)`.

    Reference:
        Yu et al., 2020, "Gradient Surgery for Multi-Task Learning".
    """

    def __init__(self, seed=0, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int. Received: seed={seed!r}")
        self.seed = seed

    def call(self, task_gradients, step=0):
        self._check_gradients(task_gradients)
        return pcgrad(task_gradients, seed=self.seed, step=step)

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config
