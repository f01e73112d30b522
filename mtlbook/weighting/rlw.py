"""Random Loss Weighting (Lin et al., 2022)."""

import math

import keras
import numpy as np
from keras import ops

from .base import LossWeighting


def _mix(value):
    """A 32-bit integer hash (Wellons' "lowbias32"): `uint32 -> uint32`.

    Every operand is a uint32 tensor (Keras 3.9 promotes a uint32 tensor
    and a Python int to int64).
    """

    def shifted(value, bits):
        return ops.right_shift(value, ops.convert_to_tensor(bits, "uint32"))

    value = ops.cast(value, "uint32")
    for bits, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        value = ops.bitwise_xor(value, shifted(value, bits))
        value = value * ops.convert_to_tensor(factor, "uint32")
    return ops.bitwise_xor(value, shifted(value, 16))


def _check_num_tasks(num_tasks):
    if isinstance(num_tasks, (bool, np.bool_)) or not isinstance(
        num_tasks, (int, np.integer)
    ) or num_tasks < 1:
        raise ValueError(
            "`num_tasks` must be a positive int. "
            f"Received: num_tasks={num_tasks!r}"
        )
    return int(num_tasks)


def _check_seed(seed):
    message = (
        "`seed` must be an int in [0, 2**32). "
        f"Received: seed={seed!r}"
    )
    if isinstance(seed, (bool, np.bool_)) or not isinstance(
        seed, (int, np.integer)
    ):
        raise TypeError(message)
    if not 0 <= seed < 2 ** 32:
        raise ValueError(message)
    return int(seed)


def _check_step(step):
    """`step`, or a `TypeError` unless an int or integer scalar tensor."""
    def message():  # only on error: the repr of a symbolic tensor may fail
        return (
            "`step` must be an int >= 0 or an integer scalar tensor. "
            f"Received: step={step!r}"
        )

    if isinstance(step, (bool, np.bool_)):
        raise TypeError(message())
    if isinstance(step, (int, np.integer)):
        if step < 0:
            raise ValueError(message())
        return step
    dtype = getattr(step, "dtype", None)
    shape = getattr(step, "shape", None)
    if dtype is None or shape is None or isinstance(step, (str, bytes)):
        raise TypeError(message())
    dtype = keras.backend.standardize_dtype(dtype)
    if not dtype.startswith(("int", "uint")) or len(shape) != 0:
        raise TypeError(message())
    return step


def standard_normal_draw(num_tasks, seed=0, step=0):
    """`num_tasks` standard normal numbers, a pure function of the seeds.

    Draw `k` of `(seed, step)` is the 32-bit key
    `K_k = h(h(seed + h(step)) + k)`, `h` the integer hash "lowbias32";
    its 24 high bits give the uniform `u_k = (K_k >> 8 + 0.5) / 2^24` in
    `(0, 1)`, and task `i` gets the Box-Muller normal
    `sqrt(-2 log u_{2i}) cos(2 pi u_{2i+1})`. The same `(seed, step)`
    gives the same numbers on every backend (up to the rounding of `log`
    and `cos`), on every replica and in a resumed run, and `step` may be
    a tensor (a step counter inside a compiled train step).

    Args:
        num_tasks: int >= 1.
        seed: int in `[0, 2^32)`.
        step: int >= 0 or integer scalar tensor (taken modulo `2^32`).

    Returns:
        `(num_tasks,)` float32 tensor.

    Example:

    ```python
    standard_normal_draw(3, seed=0, step=7)  # the same 3 numbers every time
    ```
    """
    num_tasks = _check_num_tasks(num_tasks)
    seed = _check_seed(seed)
    step = _check_step(step)
    if isinstance(step, (int, np.integer)):
        step = int(step) % 2 ** 32
    step = ops.cast(step, "uint32")
    base = _mix(ops.cast(seed, "uint32") + _mix(step))
    index = ops.cast(ops.arange(2 * num_tasks, dtype="int32"), "uint32")
    keys = _mix(base + index)
    high = ops.right_shift(keys, ops.convert_to_tensor(8, "uint32"))
    uniform = (ops.cast(high, "float32") + 0.5) / float(2 ** 24)
    uniform = ops.reshape(uniform, (num_tasks, 2))
    radius = ops.sqrt(-2.0 * ops.log(uniform[:, 0]))
    return radius * ops.cos((2.0 * math.pi) * uniform[:, 1])


def random_loss_weights(num_tasks, seed=0, step=0):
    """The random loss weights of one training step.

    `w = T * softmax(z)`, `z = standard_normal_draw(T, seed, step)`
    (`z ~ N(0, I)`, the paper's default distribution). The weights are
    positive and sum to `T`, like those of equal weighting (the paper's
    `softmax(z)` sums to 1: the factor `T` keeps the learning rate tuned
    for the sum of the losses).

    Args:
        num_tasks: int >= 1.
        seed: int in `[0, 2^32)`.
        step: int >= 0 or integer scalar tensor, e.g. the training step.

    Returns:
        `(num_tasks,)` float32 tensor.

    Example:

    ```python
    random_loss_weights(2, seed=0, step=0)  # two weights summing to 2
    ```

    Reference:
        Lin, Ye, Xu, Shi, Wang and Kwok, 2022, "Reasonable Effectiveness
        of Random Weighting: A Litmus Test for Multi-Task Learning",
        TMLR.
    """
    draw = standard_normal_draw(num_tasks, seed, step)
    if num_tasks == 1:  # softmax over one entry (Keras warns about it)
        return ops.ones((1,), "float32")
    return float(num_tasks) * ops.softmax(draw)


@keras.saving.register_keras_serializable(package="mtlbook")
class RandomLossWeighting(LossWeighting):
    """Weights the task losses with fresh random weights every step.

    At training step `t` (the number of `update_step` calls so far) the
    total is `sum_i w_i(t) * L_i` with
    `w(t) = random_loss_weights(T, seed, t) = T * softmax(z(t))`,
    `z(t) ~ N(0, I)` drawn from the stateless seeds `(seed, t)`. The step
    counter is a non-trainable variable, saved with the model, so that a
    run resumed by `keras.callbacks.BackupAndRestore` (or from a `.keras`
    file) draws the same weights as the uninterrupted run. The loop calls
    `combine_losses` and then `update_step` in each step (the protocol's
    order); `task_weights()` returns the weights of the next step. A
    random-weighted total is also what evaluation reports as `loss` (the
    task losses are reported apart).

    Random weighting costs nothing beyond equal weighting and is, in the
    paper, a strong baseline: a method that does not beat it has not
    shown that its weights matter.

    Args:
        seed: int in `[0, 2^32)`. Seed of the weights.
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_losses: `(T,)` tensor of task losses.

    Returns:
        Scalar tensor `sum_i w_i(t) * L_i`.

    Example:

    ```python
    weighting = RandomLossWeighting(seed=0)
    model = MultiTaskModel(inputs, outputs, strategy=weighting)
    ```

    Reference:
        Lin, Ye, Xu, Shi, Wang and Kwok, 2022, "Reasonable Effectiveness
        of Random Weighting: A Litmus Test for Multi-Task Learning",
        TMLR.
    """

    def __init__(self, seed=0, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.seed = _check_seed(seed)

    def build(self, input_shape):
        super().build(input_shape)
        self.steps_seen = self.add_weight(
            name="steps_seen", shape=(), dtype="int32",
            initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )

    def _check_built(self, method):
        if not self.built:
            raise ValueError(
                f"Call `set_tasks(task_names)` before `{method}`: "
                "RandomLossWeighting does not know its tasks yet. "
                "Received: num_tasks=None"
            )

    def task_weights(self):
        self._check_built("task_weights")
        return random_loss_weights(
            self.num_tasks, self.seed, ops.convert_to_tensor(self.steps_seen))

    def combine_losses(self, task_losses):
        self._check_built("combine_losses")
        return super().combine_losses(task_losses)

    def update_step(self, task_losses, gradient_norms=None):
        """Moves to the next step's weights (adds 1 to the step counter).

        Args:
            task_losses: `(T,)` tensor of the step's task losses (only
                their shape is checked).
            gradient_norms: ignored.
        """
        del gradient_norms
        self._check_built("update_step")
        self._check_losses(ops.convert_to_tensor(task_losses))
        self.steps_seen.assign(self.steps_seen + 1)

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config
