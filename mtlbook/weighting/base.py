"""The strategy protocol: what a training loop gives a strategy, and when.

A strategy is a small Keras layer, so all its state (learned
log-variances, GradNorm's weights, DWA's loss history, ...) is made of
Keras variables: a model that holds a strategy saves it to `.keras` files
and `keras.callbacks.BackupAndRestore` restores it.

Like `keras.optimizers.Optimizer`, whose base class owns the loop while
subclasses fill in `update_step`, the base class `Strategy` fixes the
protocol and the subclasses fill in a few methods. A training loop
(`mtlbook.training.MultiTaskModel`, a `keras.Model` that overrides
`compute_loss`, or a hand-written `tf.GradientTape` loop) does:

1. once: `strategy.set_tasks(task_names)` (fixes the task order, builds
   the state);
2. every training step, with the `(T,)` vector `L` of task losses:
   - if `strategy.requires_task_gradients` is False (a loss weighting),
     differentiate `strategy.combine_losses(L)`;
   - if it is True (a gradient method), compute the `(T, D)` matrix `G`
     of the flattened per-task gradients of the shared variables (see
     `flatten_gradients`) and apply
     `unflatten_gradients(strategy.combine_gradients(G, step), shared)`
     to them, each task's own variables getting its own gradient;
   - then `strategy.update_step(L, gradient_norms)`, where
     `gradient_norms` is required when `strategy.requires_gradient_norms`
     is True: the `(T,)` norms of each task loss's gradient with respect
     to the variables of the layer named `strategy.gradient_norm_layer`
     (None: the last layer whose variables are shared);
3. after every epoch: `strategy.update_epoch()`, e.g. with the callback
   `UpdateEpoch(strategy)`.

`strategy.task_weights()` returns the current `(T,)` weights (to log).
Two families fill this in: `LossWeighting` (`combine_losses`) and
`GradientMethod` (`call(task_gradients, step)`).
"""

import keras
import numpy as np
from keras import ops


def check_task_gradients(task_gradients):
    """Converts per-task gradients to a tensor and checks its rank.

    Args:
        task_gradients: `(T, D)` array-like, row `i` the flattened
            gradient of task `i`'s loss.

    Returns:
        The `(T, D)` tensor.

    Example:

    ```python
    check_task_gradients([[1.0, 0.0], [0.0, 1.0]]).shape  # (2, 2)
    ```

    Raises:
        TypeError: if the entries are not numbers (strings, bools).
        ValueError: if the rank is not 2 or there are no tasks.
    """
    expected = (
        "`task_gradients` must be a (num_tasks, num_parameters) array of "
        "floats, num_tasks >= 1."
    )
    try:
        task_gradients = ops.convert_to_tensor(task_gradients)
    except Exception as exc:  # strings, ragged lists (backend-specific)
        raise TypeError(
            f"{expected} Received: task_gradients={task_gradients!r:.200}"
        ) from exc
    dtype = keras.backend.standardize_dtype(task_gradients.dtype)
    if not dtype.startswith(("float", "bfloat", "int", "uint")):
        raise TypeError(
            f"{expected} Received: task_gradients with dtype {dtype}"
        )
    shape = tuple(task_gradients.shape)
    if len(shape) != 2 or shape[0] == 0:
        raise ValueError(
            f"{expected} Received: task_gradients.shape={shape}"
        )
    return task_gradients


def scale_task_gradients(task_gradients):
    """Divides the task gradients by a power of two near their largest entry.

    Gradient methods multiply gradients together: in float32, entries
    around `1e20` overflow in a dot product and entries around `1e-30`
    underflow to zero. Divided by `2^k`, `k = floor(log2(max |G_ij|))`,
    every entry lies in `(-4, 4)` (`(-2, 2)` but for `log2`'s rounding):
    the `T x T` dot products of the scaled gradients neither overflow nor
    underflow (short of `D` near `1e38`), and a method that works on them
    and multiplies its result back by the scale is scale-equivariant.
    Dividing by a power of two is exact, so the scaled gradients carry the
    same digits (and a method's result is bit for bit the one it had
    without scaling, where that one was finite). Computed in float32
    whatever the input's float dtype (float16 inputs do not lose their
    small entries to a float16 epsilon). All-zero gradients get the
    scale 1; non-finite entries stay non-finite.

    Args:
        task_gradients: `(T, D)` array-like, row `i` the flattened
            gradient of task `i`'s loss.

    Returns:
        Tuple `(scaled, scale)`: the `(T, D)` float32 tensor
        `task_gradients / scale` and the float32 scalar `scale`.

    Example:

    ```python
    scaled, scale = scale_task_gradients([[3e20, 0.0], [0.0, -1e20]])
    # scale = 2^68 (about 2.95e20), scaled = [[1.02, 0], [0, -0.34]]
    ```
    """
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    scale = _power_of_two_below(ops.max(ops.abs(gradients)))
    return gradients / scale, scale


def _power_of_two_below(value):
    """`2^floor(log2(value))` for a positive float32 scalar, exactly."""
    exponent = ops.floor(ops.log2(ops.where(value > 0.0, value, 1.0)))
    exponent = ops.clip(ops.where(ops.isnan(exponent), 0.0, exponent),
                        -126.0, 127.0)
    # 2^|k| from the bits of |k|, a product of exact powers of two
    # (`exp2` is not exact on every backend)
    bits = ops.cast(ops.abs(exponent), "int32")
    power = ops.ones((), "float32")
    for bit in range(7):
        is_set = ops.bitwise_and(ops.right_shift(bits, bit), 1) > 0
        power = power * ops.where(is_set, float(2 ** 2 ** bit), 1.0)
    return ops.where(exponent < 0.0, 1.0 / power, power)


def normalized_gram_matrix(task_gradients):
    """The Gram matrix `G G^T` divided by a power of two, without overflow.

    The largest diagonal entry of the result lies in `[1, 2)` (`[0.5, 4)`
    for `log2`'s rounding; an all-zero `G` gives zeros). When `G G^T` is
    finite and its largest entry above `2^-60`, it is computed from `G`
    directly (one matrix product, as `gram_matrix`) and divided;
    otherwise (entries around `1e20` overflow, around `1e-30` underflow)
    from `scale_task_gradients(G)`. Dividing by powers of two is exact, so
    both give the same digits where both are finite: a gradient method
    that works on the result has weights that do not change when the
    gradients are scaled. Any float dtype is computed in float32.

    Args:
        task_gradients: `(T, D)` tensor.

    Returns:
        `(T, T)` float32 tensor.

    Example:

    ```python
    normalized_gram_matrix([[1e20, 0.0], [1e20, 2e20]])  # [[1, 1], [1, 5]] / 4
    ```
    """
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    gram = gram_matrix(gradients)
    largest = ops.max(ops.diagonal(gram))
    direct = ops.all(ops.isfinite(gram)) & (largest >= 2.0 ** -60)

    def from_gradients():
        return gram / _power_of_two_below(largest)

    def from_scaled():
        scaled = gram_matrix(scale_task_gradients(gradients)[0])
        return scaled / _power_of_two_below(ops.max(ops.diagonal(scaled)))

    return ops.cond(direct, from_gradients, from_scaled)


def gram_matrix(task_gradients):
    """The `(T, T)` matrix of dot products `g_i . g_j` of the task gradients.

    Gradient methods work on it rather than on the `D`-dimensional
    gradients. For two tasks it is summed from elementwise products, which
    on a CPU is faster than a `(2, D) x (D, 2)` matrix product with a large
    `D` (`python -m mtlbook.bench weighting`); from three tasks on, the
    matrix product is faster.

    Args:
        task_gradients: `(T, D)` tensor.

    Returns:
        `(T, T)` float32 tensor.

    Example:

    ```python
    gram_matrix([[1.0, 0.0], [1.0, 2.0]])  # [[1, 1], [1, 5]]
    ```
    """
    gradients = ops.cast(check_task_gradients(task_gradients), "float32")
    if gradients.shape[0] is not None and gradients.shape[0] <= 2:
        return ops.sum(gradients[:, None, :] * gradients[None, :, :], axis=-1)
    return ops.matmul(gradients, ops.transpose(gradients))


def flatten_gradients(gradients, variables):
    """Concatenates one task's gradients into a float32 vector.

    Args:
        gradients: list of gradients (None for a variable the task does
            not reach, read as zeros), one per variable.
        variables: the list of variables they belong to.

    Returns:
        `(D,)` tensor, `D` the total number of entries of `variables`.

    Example:

    ```python
    row = flatten_gradients(tape.gradient(task_loss, shared), shared)
    ```
    """
    if len(gradients) != len(variables):
        raise ValueError(
            "`gradients` and `variables` must have the same length. "
            f"Received: {len(gradients)} gradients, {len(variables)} "
            "variables"
        )
    for index, (gradient, variable) in enumerate(zip(gradients, variables)):
        if gradient is None:
            continue
        shape = getattr(gradient, "shape", None)
        if shape is None:
            shape = np.shape(gradient)
        shape, wanted = tuple(shape), tuple(variable.shape)
        if len(shape) != len(wanted) or any(
            a is not None and b is not None and a != b
            for a, b in zip(shape, wanted)
        ):
            raise ValueError(
                f"`gradients[{index}]` must have the shape {wanted} of "
                f"`variables[{index}]`. Received: gradients[{index}].shape="
                f"{shape}"
            )
    return ops.concatenate([
        ops.reshape(
            ops.zeros(v.shape, "float32") if g is None
            else ops.cast(g, "float32"),
            (-1,),
        )
        for g, v in zip(gradients, variables)
    ])


def unflatten_gradients(vector, variables):
    """Splits a `(D,)` vector into gradients shaped like `variables`.

    The inverse of `flatten_gradients`; the pieces are cast to each
    variable's dtype.

    Args:
        vector: `(D,)` tensor (or array-like).
        variables: the list of variables that `vector` was flattened from.

    Returns:
        List of tensors, one per variable.

    Example:

    ```python
    update = strategy.combine_gradients(matrix, step)
    optimizer.apply_gradients(
        zip(unflatten_gradients(update, shared), shared))
    ```
    """
    sizes = [int(np.prod(v.shape)) for v in variables]
    vector = ops.convert_to_tensor(vector)
    shape = tuple(vector.shape)
    if len(shape) != 1 or shape[0] not in (None, sum(sizes)):
        raise ValueError(
            f"`vector` must have {sum(sizes)} entries, shape "
            f"({sum(sizes)},) (the sizes of `variables`). Received: "
            f"vector.shape={shape}"
        )
    pieces, start = [], 0
    for variable, size in zip(variables, sizes):
        piece = ops.reshape(vector[start:start + size], variable.shape)
        pieces.append(ops.cast(piece, variable.dtype))
        start += size
    return pieces


class Strategy(keras.layers.Layer):
    """Base class of every strategy: the protocol of the module docstring.

    Subclasses declare what they need each step with the class attributes
    `requires_task_gradients` and `requires_gradient_norms` (and the
    instance attribute `gradient_norm_layer`), and fill in
    `task_weights()` plus `combine_losses` (loss weightings) or `call`
    (gradient methods); `update_step` and `update_epoch` are optional
    hooks. All state must be Keras variables created in `build`.

    Args:
        num_tasks: optional int. Number of tasks; inferred by `set_tasks`.
        **kwargs: Base layer arguments (`name`, ...).
    """

    #: `combine_gradients` needs the `(T, D)` per-task gradients.
    requires_task_gradients = False
    #: `update_step` needs the `(T,)` gradient norms at one layer.
    requires_gradient_norms = False

    def __init__(self, num_tasks=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_tasks is not None and (
            isinstance(num_tasks, bool) or not isinstance(num_tasks, int)
            or num_tasks < 1
        ):
            raise ValueError(
                "`num_tasks` must be a positive int or None. "
                f"Received: num_tasks={num_tasks!r}"
            )
        self.num_tasks = num_tasks
        self.task_names = None
        self.gradient_norm_layer = None

    def set_tasks(self, task_names):
        """Fixes the task order and builds the state (call once).

        Args:
            task_names: sequence of distinct task names, in the order of
                the loss vectors the loop will pass.
        """
        names = None
        if not isinstance(task_names, (str, bytes)):
            try:
                names = list(task_names)
            except TypeError:  # not iterable (an int, a bool, ...)
                names = None
        if names is None or not all(
            isinstance(name, str) for name in names
        ) or len(set(names)) != len(names) or not names:
            raise ValueError(
                "`task_names` must be a non-empty sequence of distinct "
                f"strings. Received: task_names={task_names!r}"
            )
        if self.task_names is not None and names != list(self.task_names):
            raise ValueError(
                f"`{type(self).__name__}` is already used for the tasks "
                f"{self.task_names}. Received: task_names={names}"
            )
        self.check_num_tasks(len(names))
        self.task_names = names
        if not self.built:
            self.build((len(names),))

    def check_num_tasks(self, num_tasks):
        """Raises `ValueError` when built for a different number of tasks.

        Args:
            num_tasks: int. Number of tasks of the model using the strategy.
        """
        if isinstance(num_tasks, bool) or not isinstance(
            num_tasks, (int, np.integer)
        ) or num_tasks < 1:
            raise ValueError(
                "`num_tasks` must be a positive int. "
                f"Received: num_tasks={num_tasks!r}"
            )
        if self.num_tasks is not None and self.num_tasks != num_tasks:
            raise ValueError(
                f"`{type(self).__name__}` was built for "
                f"{self.num_tasks} tasks and cannot be used with "
                f"{num_tasks}. Received: num_tasks={num_tasks}"
            )

    def build(self, input_shape):
        num_tasks = int(input_shape[0])
        self.check_num_tasks(num_tasks)
        self.num_tasks = num_tasks
        super().build(input_shape)

    def task_weights(self):
        """Returns the current `(T,)` task weights."""
        return ops.ones((self.num_tasks,), dtype=self.dtype)

    def combine_losses(self, task_losses):
        """Returns the scalar loss to differentiate: `sum_i w_i * L_i`.

        Args:
            task_losses: `(T,)` tensor of task losses.
        """
        task_losses = ops.cast(task_losses, self.dtype)
        self._check_losses(task_losses)
        weights = ops.stop_gradient(self.task_weights())
        return ops.sum(weights * task_losses)

    def _check_losses(self, task_losses):
        """Raises `ValueError` unless the (static) shape is `(T,)`."""
        shape = tuple(task_losses.shape)
        if len(shape) != 1 or (
            None not in (shape[0], self.num_tasks)
            and shape[0] != self.num_tasks
        ):
            raise ValueError(
                f"`task_losses` must have shape "
                f"({self.num_tasks or 'num_tasks'},), one loss per task. "
                f"Received: task_losses.shape={shape}"
            )

    def _check_gradients(self, task_gradients):
        """`check_task_gradients`, plus one row per task once built."""
        gradients = check_task_gradients(task_gradients)
        rows = gradients.shape[0]
        if None not in (rows, self.num_tasks) and rows != self.num_tasks:
            raise ValueError(
                f"`task_gradients` must have shape ({self.num_tasks}, "
                "num_parameters), one row per task. Received: "
                f"task_gradients.shape={tuple(gradients.shape)}"
            )
        return gradients

    def combine_gradients(self, task_gradients, step=0):
        """Returns the `(D,)` update from the `(T, D)` task gradients.

        The base version is the weighted sum `sum_i w_i g_i`, what
        differentiating `combine_losses` gives.

        Args:
            task_gradients: `(T, D)` tensor.
            step: integer scalar, the training step (seeds random choices).
        """
        del step
        gradients = self._check_gradients(task_gradients)
        weights = ops.stop_gradient(self.task_weights())
        return ops.matmul(weights, ops.cast(gradients, self.dtype))

    def update_step(self, task_losses, gradient_norms=None):
        """Per-step hook, after the gradients: updates the state.

        Args:
            task_losses: `(T,)` tensor of the step's task losses.
            gradient_norms: `(T,)` tensor or None (see the module docstring).
        """
        del task_losses, gradient_norms

    def update_epoch(self):
        """Per-epoch hook, after each training epoch."""

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks})
        return config


class LossWeighting(Strategy):
    """Base class: turns `T` task losses into one scalar loss.

    Subclasses implement `task_weights()`; the default `call` (and
    `combine_losses`) returns `sum_i w_i * L_i` with the weights held
    constant. Override `combine_losses` for a different total (and
    `call` is `combine_losses`).
    """

    def call(self, task_losses):
        return self.combine_losses(task_losses)


class GradientMethod(Strategy):
    """Base class: combines per-task gradients of the shared parameters.

    Subclasses implement `call(task_gradients, step)`: it takes the
    `(T, D)` tensor (row `i` is the flattened gradient of task `i`'s loss)
    and the training step (used to seed random choices), and returns the
    `(D,)` update; `combine_gradients` calls it.
    """

    requires_task_gradients = True

    def combine_gradients(self, task_gradients, step=0):
        self._check_gradients(task_gradients)
        return self(task_gradients, step=step)


@keras.saving.register_keras_serializable(package="mtlbook")
class EqualWeighting(LossWeighting):
    """Sums the task losses: `total = sum_i L_i` (every weight is 1).

    This is what `keras.Model.compile` does with a dict of losses and no
    `loss_weights`, the baseline every other strategy is compared to, and
    `MultiTaskModel`'s default. (It lives here, with the protocol, so that
    a training loop needs no other strategy module; `equal.py` re-exports
    it.)

    Args:
        num_tasks: optional int. Number of tasks; inferred by `set_tasks`.
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_losses: `(T,)` tensor of task losses.

    Returns:
        Scalar tensor, the sum of the task losses.

    Example:

    ```python
    total = EqualWeighting()(keras.ops.array([0.5, 2.0]))  # 2.5
    ```
    """


class UpdateEpoch(keras.callbacks.Callback):
    """Keras callback that calls `strategy.update_epoch()` after each epoch.

    Before the update it adds the epoch's final task weights to the epoch's
    logs as `<task>_weight` (so they reach the `History` and later
    callbacks, as `LearningRateScheduler` adds the learning rate).
    `MultiTaskModel.fit` adds it by itself; pass it to `fit` of any other
    model that uses a strategy (or call `update_epoch()` at the end of each
    epoch of a hand-written loop or of `train_on_batch` calls).

    Args:
        strategy: a `Strategy`.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[UpdateEpoch(model.strategy)])
    ```
    """

    def __init__(self, strategy):
        super().__init__()
        if not isinstance(strategy, Strategy):
            raise TypeError(
                "`strategy` must be a mtlbook.weighting strategy. "
                f"Received: strategy={strategy!r}"
            )
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.strategy.task_names is not None:
            weights = ops.convert_to_numpy(self.strategy.task_weights())
            for name, weight in zip(self.strategy.task_names, weights):
                logs[f"{name}_weight"] = float(weight)
        self.strategy.update_epoch()


def support_masks(num_tasks):
    """The `2^T - 1` non-empty subsets of `T` tasks, as 0/1 rows.

    Args:
        num_tasks: int >= 1.

    Returns:
        `(2^T - 1, T)` float32 NumPy array; row `k` has ones at the bits of
        `k + 1`.

    Example:

    ```python
    support_masks(2)  # [[1, 0], [0, 1], [1, 1]]
    ```
    """
    codes = np.arange(1, 2 ** num_tasks)
    return ((codes[:, None] >> np.arange(num_tasks)) & 1).astype("float32")


def support_minimizers(gram, right_hand_sides):
    """Solves `M_SS y = r_S` (shifted) on every support `S` at once.

    For every support `S` (`support_masks`) it solves
    `(M_SS + m 1 1^T + d I) y_S = r_S` with `y` zero outside `S`, where
    `m` is the largest diagonal entry of `M` and `d = 1e-6 m`. The shift
    `m 1 1^T` makes the matrix positive definite when the gradients of `S`
    are affinely independent (the solution of the minimum-norm problem on
    the affine hull is `y / sum(y)` with `r = 1`); the ridge `d I` keeps
    every system solvable when they are not (duplicated gradients), and
    such supports are never the only solution.

    Args:
        gram: `(T, T)` float32 Gram matrix.
        right_hand_sides: `(T, R)` tensor, `R` right-hand sides.

    Returns:
        `(2^T - 1, T, R)` tensor of the solutions.

    Example:

    ```python
    support_minimizers(ops.eye(2), ops.ones((2, 1)))[:, :, 0]
    ```
    """
    num_tasks = gram.shape[0]
    masks = ops.convert_to_tensor(support_masks(num_tasks))
    level = ops.max(ops.diagonal(gram))
    level = ops.where(level > 0.0, level, 1.0)
    identity = ops.eye(num_tasks)
    inside = masks[:, :, None] * masks[:, None, :]
    systems = (
        inside * (gram + level)[None]
        + (1.0 - masks)[:, :, None] * identity[None]
        + (1e-6 * level) * masks[:, :, None] * identity[None]
    )
    right = masks[:, :, None] * right_hand_sides[None]
    return ops.solve(systems, right)
