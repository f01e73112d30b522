"""FAMO: Fast Adaptive Multitask Optimization (Liu et al., 2023)."""

import math
import numbers

import keras
from keras import ops

from .base import LossWeighting

#: Adam's constants for the logits, those of the official code (PyTorch's).
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8


def _check_float(name, value, low, low_open, high=math.inf):
    """`float(value)`, or an error unless a finite float in the range."""
    bracket = "(" if low_open else "["
    message = (
        f"`{name}` must be a finite float in {bracket}{low}, {high}). "
        f"Received: {name}={value!r}"
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(message)
    value = float(value)
    if not math.isfinite(value) or value < low or (
        low_open and value == low
    ) or value >= high:
        raise ValueError(message)
    return value


def _check_vector(name, value, num_tasks=None):
    """`value` as a float32 tensor, or an error unless its shape is `(T,)`."""
    try:
        value = ops.convert_to_tensor(value)
    except Exception as exc:  # strings, ragged lists (backend-specific)
        raise TypeError(
            f"`{name}` must be a (num_tasks,) vector of floats. "
            f"Received: {name}={value!r:.200}"
        ) from exc
    dtype = keras.backend.standardize_dtype(value.dtype)
    if not dtype.startswith(("float", "bfloat", "int", "uint")):
        raise TypeError(
            f"`{name}` must be a (num_tasks,) vector of floats. "
            f"Received: {name} with dtype {dtype}"
        )
    shape = tuple(value.shape)
    known = None not in (num_tasks, *shape)
    if len(shape) != 1 or shape[0] == 0 or (
        known and shape[0] != num_tasks
    ):
        raise ValueError(
            f"`{name}` must have shape ({num_tasks or 'num_tasks'},), one "
            f"value per task. Received: {name}.shape={shape}"
        )
    return ops.cast(value, "float32")


def _softmax(values):
    """`softmax(values)` of a vector (ones for one entry: Keras warns)."""
    if values.shape[0] == 1:
        return ops.ones((1,), "float32")
    return ops.softmax(values)


def famo_weights(logits, task_losses, epsilon=1e-8):
    """FAMO's loss weights: `w_i = c z_i / D_i`, summing to 1.

    With `z = softmax(logits)`, `D_i = L_i + epsilon` and
    `c = (sum_j z_j / D_j)^-1`, the weights are `w_i = c z_i / D_i`, so
    that `sum_i w_i grad(L_i) = c sum_i z_i grad(log D_i)`: FAMO's update
    direction, a `z`-weighted sum of the gradients of the log losses,
    scaled back to the units of the losses. They are computed as
    `softmax(logits - log D)` (the same numbers, without overflow). A
    loss that is not finite or with `D_i <= 0` (FAMO needs
    `log L`) makes every weight NaN.

    Args:
        logits: `(T,)` tensor, FAMO's `xi`.
        task_losses: `(T,)` tensor of positive task losses.
        epsilon: finite float >= 0 added to the losses (`1e-8` in the
            official code).

    Returns:
        `(T,)` float32 tensor.

    Example:

    ```python
    famo_weights([0.0, 0.0], [1.0, 3.0])  # [0.75, 0.25]
    ```

    Reference:
        Liu, Liu, Stone and Liu, 2023, "FAMO: Fast Adaptive Multitask
        Optimization", NeurIPS.
    """
    epsilon = _check_float("epsilon", epsilon, 0.0, False)
    logits = _check_vector("logits", logits)
    shifted = _check_vector("task_losses", task_losses,
                            logits.shape[0]) + epsilon
    usable = ops.all(ops.isfinite(shifted) & (shifted > 0.0))
    weights = _softmax(
        logits - ops.log(ops.where(shifted > 0.0, shifted, 1.0)))
    return ops.where(usable, weights, math.nan)


def famo_logit_gradient(logits, previous_losses, task_losses,
                        weight_decay=0.01, epsilon=1e-8):
    """The gradient FAMO's logits descend after one step.

    `g = J_z(xi)^T delta + gamma xi`, where `z = softmax(xi)`,
    `J_z = diag(z) - z z^T` its Jacobian,
    `delta_i = log(L_i^prev + epsilon) - log(L_i + epsilon)` the fall of
    task `i`'s log loss over the step and `gamma` the weight decay; so
    `g_i = z_i (delta_i - sum_j z_j delta_j) + gamma xi_i`. Descending
    `g` moves weight away from the tasks whose log loss fell most, toward
    equal rates of improvement.

    Args:
        logits: `(T,)` tensor, FAMO's `xi`.
        previous_losses: `(T,)` positive task losses before the step.
        task_losses: `(T,)` positive task losses after the step.
        weight_decay: finite float >= 0, `gamma`.
        epsilon: finite float >= 0 added to the losses.

    Returns:
        `(T,)` float32 tensor.

    Example:

    ```python
    famo_logit_gradient([0.0, 0.0], [1.0, 1.0], [0.5, 1.0])
    # task 1's log loss fell by log 2: [0.17, -0.17]
    ```

    Reference:
        Liu, Liu, Stone and Liu, 2023, "FAMO: Fast Adaptive Multitask
        Optimization", NeurIPS.
    """
    weight_decay = _check_float("weight_decay", weight_decay, 0.0, False)
    epsilon = _check_float("epsilon", epsilon, 0.0, False)
    logits = _check_vector("logits", logits)
    num_tasks = logits.shape[0]
    previous = _check_vector("previous_losses", previous_losses, num_tasks)
    current = _check_vector("task_losses", task_losses, num_tasks)
    delta = ops.log(previous + epsilon) - ops.log(current + epsilon)
    z = _softmax(logits)
    return z * (delta - ops.sum(z * delta)) + weight_decay * logits


@keras.saving.register_keras_serializable(package="mtlbook")
class FAMO(LossWeighting):
    """Fast Adaptive Multitask Optimization: balances the rates of improvement.

    FAMO keeps logits `xi` (zeros at the start), `z = softmax(xi)`, and
    steps along `c sum_i z_i grad(log L_i)`, `c = (sum_i z_i / L_i)^-1`:
    the total is `sum_i w_i L_i` with the weights held constant,
    `w = famo_weights(xi, L)` (`w_i = c z_i / (L_i + epsilon)`, summing
    to 1). After the step, `xi` descends the gradient
    `famo_logit_gradient(xi, L_prev, L, weight_decay)` (the fall of each
    log loss, through the softmax's Jacobian, plus the weight decay)
    with Adam (learning rate `learning_rate`, betas 0.9 and 0.999,
    epsilon 1e-8, the decay added to the gradient), as the official code
    does (the paper's Algorithm 1 writes a plain gradient step). A task
    whose log loss falls fast loses weight, one that lags gains it.

    The official code recomputes the losses on the same batch after the
    step to get `L` (one more forward pass). Here `update_step(L)`, which
    the protocol calls after each step, compares the step's losses with
    those of the previous step (another batch, one step later): no extra
    pass, so a step costs about what equal weighting costs, and the
    memory is `O(T)`. The first step only records its losses. A step
    whose losses are not all finite and positive changes nothing (the
    next step compares with the last usable losses); its total is NaN.
    `task_weights()` returns the weights for the last losses seen
    (`softmax(xi)` before any).

    The logits, Adam's moments and step count and the last losses are
    non-trainable variables: saved in `.keras` files and restored by
    `keras.callbacks.BackupAndRestore`.

    Args:
        learning_rate: finite float > 0. Adam's learning rate for the
            logits (`beta`, 0.025 in the paper).
        weight_decay: finite float >= 0. `gamma` (0.01, the official
            code's default; the paper tunes it per benchmark).
        epsilon: finite float >= 0. Added to every loss (1e-8).
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_losses: `(T,)` tensor of positive task losses.

    Returns:
        Scalar tensor `sum_i w_i L_i`.

    Example:

    ```python
    weighting = FAMO()
    model = MultiTaskModel(inputs, outputs, strategy=weighting)
    ```

    Reference:
        Liu, Liu, Stone and Liu, 2023, "FAMO: Fast Adaptive Multitask
        Optimization", NeurIPS.
    """

    def __init__(self, learning_rate=0.025, weight_decay=0.01, epsilon=1e-8,
                 num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.learning_rate = _check_float(
            "learning_rate", learning_rate, 0.0, True)
        self.weight_decay = _check_float(
            "weight_decay", weight_decay, 0.0, False)
        self.epsilon = _check_float("epsilon", epsilon, 0.0, False)

    def build(self, input_shape):
        super().build(input_shape)
        state = dict(trainable=False, aggregation="only_first_replica")
        vector = dict(shape=(self.num_tasks,), initializer="zeros", **state)
        self.logits = self.add_weight(name="logits", **vector)
        self.first_moment = self.add_weight(name="first_moment", **vector)
        self.second_moment = self.add_weight(name="second_moment", **vector)
        self.previous_losses = self.add_weight(
            name="previous_losses", **vector)
        self.updates = self.add_weight(
            name="updates", shape=(), initializer="zeros", **state)
        self.losses_seen = self.add_weight(
            name="losses_seen", shape=(), initializer="zeros", **state)

    def _check_built(self, method):
        if not self.built:
            raise ValueError(
                f"Call `set_tasks(task_names)` before `{method}`: "
                "FAMO does not know its tasks yet. Received: num_tasks=None"
            )

    def softmax_weights(self):
        """Returns `z = softmax(xi)`, the `(T,)` weights of the log losses."""
        self._check_built("softmax_weights")
        return _softmax(ops.convert_to_tensor(self.logits))

    def task_weights(self):
        self._check_built("task_weights")
        logits = ops.convert_to_tensor(self.logits)
        return ops.where(
            ops.convert_to_tensor(self.losses_seen) > 0.0,
            famo_weights(logits, ops.convert_to_tensor(self.previous_losses),
                         self.epsilon),
            _softmax(logits))

    def combine_losses(self, task_losses):
        self._check_built("combine_losses")
        task_losses = ops.cast(task_losses, self.dtype)
        self._check_losses(task_losses)
        weights = ops.stop_gradient(famo_weights(
            ops.convert_to_tensor(self.logits),
            ops.stop_gradient(task_losses), self.epsilon))
        return ops.sum(weights * task_losses)

    def update_step(self, task_losses, gradient_norms=None):
        """One Adam step on the logits, from the change of the log losses.

        Args:
            task_losses: `(T,)` tensor of the step's task losses.
            gradient_norms: ignored.
        """
        del gradient_norms
        self._check_built("update_step")
        losses = ops.stop_gradient(
            _check_vector("task_losses", task_losses, self.num_tasks))
        (logits, first, second, updates, previous, seen) = [
            ops.convert_to_tensor(variable) for variable in (
                self.logits, self.first_moment, self.second_moment,
                self.updates, self.previous_losses, self.losses_seen)]
        shifted = losses + self.epsilon
        usable = ops.all(ops.isfinite(shifted) & (shifted > 0.0))
        move = usable & (seen > 0.0)
        gradient = famo_logit_gradient(
            logits, previous, ops.where(usable, losses, previous),
            self.weight_decay, self.epsilon)
        new_updates = updates + 1.0
        new_first = ADAM_BETA_1 * first + (1.0 - ADAM_BETA_1) * gradient
        new_second = ADAM_BETA_2 * second + (1.0 - ADAM_BETA_2) * (
            gradient * gradient)
        step = self.learning_rate * (
            new_first / (1.0 - ADAM_BETA_1 ** new_updates))
        step = step / (ops.sqrt(
            new_second / (1.0 - ADAM_BETA_2 ** new_updates)) + ADAM_EPSILON)
        self.logits.assign(ops.where(move, logits - step, logits))
        self.first_moment.assign(ops.where(move, new_first, first))
        self.second_moment.assign(ops.where(move, new_second, second))
        self.updates.assign(ops.where(move, new_updates, updates))
        self.previous_losses.assign(ops.where(usable, losses, previous))
        self.losses_seen.assign(seen + ops.cast(usable, "float32"))

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self.learning_rate,
                       "weight_decay": self.weight_decay,
                       "epsilon": self.epsilon})
        return config
