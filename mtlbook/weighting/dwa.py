"""Dynamic Weight Average (Liu, Johns and Davison, 2019)."""

import math
import numbers

import keras
import numpy as np
from keras import ops

from .base import LossWeighting


def _check_temperature(temperature):
    """`float(temperature)`, or an error unless it is a finite float > 0."""
    message = (
        "`temperature` must be a finite float > 0. "
        f"Received: temperature={temperature!r}"
    )
    if isinstance(temperature, bool) or not isinstance(
        temperature, numbers.Real
    ):
        raise TypeError(message)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(message)
    return float(temperature)


def _check_vector(name, value, num_tasks):
    """`value` as a float32 tensor, or an error unless its shape is `(T,)`."""
    value = ops.convert_to_tensor(value, "float32")
    shape = tuple(value.shape)
    known = None not in (num_tasks, *shape)
    if len(shape) != 1 or (known and shape[0] != num_tasks):
        raise ValueError(
            f"`{name}` must have shape ({num_tasks or 'num_tasks'},), one "
            f"value per task. Received: {name}.shape={shape}"
        )
    return value


def dwa_weights(previous_losses, earlier_losses, temperature=2.0):
    """DWA weights from the mean losses of the last two epochs.

    `r_i = L_i(t-1) / L_i(t-2)` and
    `w_i = T * exp(r_i / temperature) / sum_j exp(r_j / temperature)`,
    so the weights sum to `T` and a task whose loss falls slowly gets more
    weight.

    A ratio needs two finite, positive losses: a task with a loss that is
    0, negative, inf or NaN (or whose ratio overflows) gets the weight 1,
    and the softmax runs over the other tasks, which share the rest of
    the total `T` (every weight is 1 when no task has a ratio). The
    weights stay finite and sum to `T`, and with usable losses they are
    the formula's.

    Args:
        previous_losses: `(T,)` mean training losses of epoch `t-1`.
        earlier_losses: `(T,)` mean training losses of epoch `t-2`.
        temperature: finite float > 0. Larger values give more even
            weights.

    Returns:
        `(T,)` tensor of weights.

    Example:

    ```python
    dwa_weights([1.0, 1.0], [2.0, 1.0])  # task 2 stalls: [0.88, 1.12]
    ```
    """
    temperature = _check_temperature(temperature)
    previous_losses = ops.convert_to_tensor(previous_losses, "float32")
    if len(previous_losses.shape) != 1:
        raise ValueError(
            "`previous_losses` must have shape (num_tasks,). Received: "
            f"previous_losses.shape={tuple(previous_losses.shape)}"
        )
    earlier_losses = _check_vector("earlier_losses", earlier_losses,
                                   previous_losses.shape[0])
    ratios = previous_losses / earlier_losses
    num_tasks = ops.cast(ops.shape(ratios)[0], "float32")
    weights = num_tasks * ops.softmax(ratios / temperature)
    usable = (
        ops.isfinite(previous_losses) & (previous_losses > 0.0)
        & ops.isfinite(earlier_losses) & (earlier_losses > 0.0)
        & ops.isfinite(ratios)
    )
    # the softmax over the usable tasks only, which share their number
    # of weight units (computed apart, so that usable losses keep the
    # formula's digits)
    count = ops.sum(ops.cast(usable, "float32"))
    masked = ops.where(usable, ratios / temperature, -np.inf)
    masked = ops.where(ops.any(usable), masked, 0.0)
    partial = count * ops.softmax(masked)
    return ops.where(ops.all(usable), weights,
                     ops.where(usable, partial, 1.0))


@keras.saving.register_keras_serializable(package="mtlbook")
class DynamicWeightAverage(LossWeighting):
    """Weights tasks by how fast their training losses are falling.

    For epoch `t >= 3` the weights are `dwa_weights(L(t-1), L(t-2),
    temperature)` computed from the mean training loss of each task in the
    two previous epochs; in epochs 1 and 2 every weight is 1. The total is
    `sum_i w_i * L_i`. `update_step(task_losses)` adds each step's losses
    to a running sum and `update_epoch()` turns the sum into the epoch's
    mean losses and the next epoch's weights (`MultiTaskModel.fit` calls
    both; elsewhere use the callback `UpdateEpoch`). The running sum, the
    two last epochs' losses, the number of epochs seen and the current
    weights are non-trainable variables, so they are saved with the model.

    Bad losses do not poison the weights: a step whose losses are not all
    finite is left out of the epoch's mean (for every task), and an epoch
    whose mean loss is not finite and positive for some task is not
    recorded (the loss history, the epoch count and the weights stay as
    they were), since a ratio with it would be 0, inf or NaN.

    Args:
        temperature: finite float > 0. Softmax temperature (2.0 in the
            paper).
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_losses: `(T,)` tensor of task losses.

    Returns:
        Scalar tensor `sum_i w_i * L_i`.

    Example:

    ```python
    weighting = DynamicWeightAverage(temperature=2.0)
    model = MultiTaskModel(inputs, outputs, strategy=weighting)
    ```

    Reference:
        Liu, Johns and Davison, 2019, "End-to-End Multi-Task Learning with
        Attention".
    """

    def __init__(self, temperature=2.0, num_tasks=None, **kwargs):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.temperature = _check_temperature(temperature)

    def build(self, input_shape):
        super().build(input_shape)
        state = dict(trainable=False, aggregation="only_first_replica")
        self.loss_history = self.add_weight(
            name="loss_history", shape=(2, self.num_tasks),
            initializer="ones", **state,
        )
        self.epochs_seen = self.add_weight(
            name="epochs_seen", shape=(), initializer="zeros", **state
        )
        self.current_weights = self.add_weight(
            name="current_weights", shape=(self.num_tasks,),
            initializer="ones", **state,
        )
        self.loss_sum = self.add_weight(
            name="loss_sum", shape=(self.num_tasks,), initializer="zeros",
            **state,
        )
        self.steps_seen = self.add_weight(
            name="steps_seen", shape=(), initializer="zeros", **state
        )

    def task_weights(self):
        return ops.convert_to_tensor(self.current_weights)

    def _check_built(self, method):
        if not self.built:
            raise ValueError(
                f"Call `set_tasks(task_names)` before `{method}`: "
                "DynamicWeightAverage does not know its tasks yet. "
                "Received: num_tasks=None"
            )

    def update_step(self, task_losses, gradient_norms=None):
        """Adds one step's task losses to the epoch's running sum.

        A step whose losses are not all finite is left out (for every
        task), so that one bad batch does not make the epoch's mean inf or
        NaN.

        Args:
            task_losses: `(T,)` tensor of the step's task losses.
            gradient_norms: ignored.
        """
        del gradient_norms
        self._check_built("update_step")
        losses = ops.stop_gradient(
            _check_vector("task_losses", task_losses, self.num_tasks))
        finite = ops.all(ops.isfinite(losses))
        self.loss_sum.assign(self.loss_sum + ops.where(finite, losses, 0.0))
        self.steps_seen.assign(self.steps_seen + ops.cast(finite, "float32"))

    def update_epoch(self, mean_losses=None):
        """Records an epoch's mean losses and sets the next epoch's weights.

        An epoch without steps, or whose mean loss is not finite and
        positive for some task, changes nothing but the running sum (reset
        to 0).

        Args:
            mean_losses: optional `(T,)` mean training loss of each task
                this epoch; default the mean of the (finite) losses given
                to `update_step` since the last call.
        """
        self._check_built("update_epoch")
        if mean_losses is None:
            steps = ops.convert_to_tensor(self.steps_seen)
            mean_losses = self.loss_sum / ops.maximum(steps, 1.0)
            seen = steps > 0.0
            self.loss_sum.assign(ops.zeros_like(self.loss_sum.value))
            self.steps_seen.assign(0.0)
        else:
            mean_losses = _check_vector("mean_losses", mean_losses,
                                        self.num_tasks)
            seen = ops.convert_to_tensor(True)
        usable = ops.logical_and(ops.isfinite(mean_losses), mean_losses > 0.0)
        seen = ops.logical_and(seen, ops.all(usable))
        old_history = ops.convert_to_tensor(self.loss_history)
        history = ops.where(
            seen, ops.stack([old_history[1], mean_losses]), old_history
        )
        epochs = self.epochs_seen + ops.cast(seen, "float32")
        self.loss_history.assign(history)
        self.epochs_seen.assign(epochs)
        weights = ops.where(
            epochs >= 2.0,
            dwa_weights(history[1], history[0], self.temperature),
            ops.ones_like(mean_losses),
        )
        self.current_weights.assign(weights)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config
