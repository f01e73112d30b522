"""GradNorm: balancing training rates through gradient norms (Chen et al.)."""

import math
import numbers

import keras
from keras import ops

from .base import LossWeighting


def _check_float(name, value, low, high=None, low_allowed=True):
    """`float(value)`, or an error if it is no finite float in the range."""
    expected = "a finite float " + (f">= {low}" if low_allowed else f"> {low}")
    if high is not None:
        expected += f" and < {high}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be {expected}. Received: {name}={value!r}"
        )
    if not (math.isfinite(value) and (value >= low if low_allowed
                                      else value > low)
            and (high is None or value < high)):
        raise ValueError(
            f"`{name}` must be {expected}. Received: {name}={value!r}"
        )
    return float(value)


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


def _masked_mean(values, active):
    """The mean of the `(T,)` `values` over the `active` entries (0 if none).

    Written as `mean(values) * T / count`, so that with every entry active
    it is `ops.mean(values)` to the last bit.
    """
    size = ops.cast(ops.shape(values)[0], "float32")
    count = ops.sum(ops.cast(active, "float32"))
    return ops.mean(ops.where(active, values, 0.0)) * (
        size / ops.maximum(count, 1.0)
    )


def gradnorm_weight_gradient(
    weights, task_losses, initial_losses, gradient_norms, alpha=1.5,
    active=None,
):
    """Gradient of GradNorm's L1 loss with respect to the task weights.

    With `G_i = w_i * n_i` (`n_i` the norm of the gradient of the
    *unweighted* loss `L_i` w.r.t. the last shared layer),
    `r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))` and the constant target
    `G*_i = mean_j(G_j) * r_i ** alpha`, the loss
    `L_grad = sum_i |G_i - G*_i|` has the gradient
    `dL_grad / dw_i = sign(G_i - G*_i) * n_i` (the target is held constant,
    as in the paper).

    Args:
        weights: `(T,)` current task weights.
        task_losses: `(T,)` current task losses.
        initial_losses: `(T,)` task losses at the first step.
        gradient_norms: `(T,)` norms `n_i`.
        alpha: float >= 0. Strength of the restoring force (1.5 in the
            paper).
        active: optional `(T,)` bools. Only these tasks take part: the
            means run over them, and the others get a gradient of 0 (and
            may hold any value, even NaN). Default: every task. A task
            whose loss or initial loss is not finite and positive, or
            whose gradient norm is not finite, never takes part (its
            loss ratio would be 0, inf or NaN): the gradient stays finite.

    Returns:
        `(T,)` tensor, the gradient of `L_grad` w.r.t. the weights.

    Example:

    ```python
    gradnorm_weight_gradient([1., 1.], [1., 1.], [1., 1.], [2., 1.])
    # G = [2, 1], target = [1.5, 1.5] -> [2., -1.]
    ```
    """
    alpha = _check_float("alpha", alpha, 0.0)
    weights = ops.convert_to_tensor(weights, "float32")
    if len(weights.shape) != 1:
        raise ValueError(
            "`weights` must have shape (num_tasks,). "
            f"Received: weights.shape={tuple(weights.shape)}"
        )
    num_tasks = weights.shape[0]
    task_losses = _check_vector("task_losses", task_losses, num_tasks)
    initial_losses = _check_vector("initial_losses", initial_losses,
                                   num_tasks)
    norms = _check_vector("gradient_norms", gradient_norms, num_tasks)
    if active is None:
        active = ops.ones_like(weights, dtype="bool")
    else:
        active = ops.convert_to_tensor(active, "bool")
        if len(active.shape) != 1 or active.shape[0] not in (None,
                                                             num_tasks):
            raise ValueError(
                f"`active` must have shape ({num_tasks},). "
                f"Received: active.shape={tuple(active.shape)}"
            )

    def usable(losses):
        return ops.logical_and(ops.isfinite(losses), losses > 0.0)

    active = ops.logical_and(
        ops.logical_and(active, ops.isfinite(norms)),
        ops.logical_and(usable(task_losses), usable(initial_losses)),
    )
    # the inactive entries are replaced before use: their values, even
    # NaN or inf, cannot reach the active ones
    task_losses = ops.where(active, task_losses, 1.0)
    initial_losses = ops.where(active, initial_losses, 1.0)
    norms = ops.where(active, norms, 0.0)
    loss_ratios = task_losses / initial_losses
    inverse_rates = loss_ratios / _masked_mean(loss_ratios, active)
    weighted_norms = weights * norms
    target = ops.stop_gradient(
        _masked_mean(weighted_norms, active)
        * inverse_rates ** alpha
    )
    return ops.where(
        active, ops.sign(weighted_norms - target) * norms, 0.0
    )


@keras.saving.register_keras_serializable(package="mtlbook")
class GradNorm(LossWeighting):
    """Learns task weights so that all tasks train at a similar rate.

    The total loss is `sum_i w_i * L_i`. After each step,
    `update_step(task_losses, gradient_norms)` moves the weights one step on
    GradNorm's loss (see `gradnorm_weight_gradient`), with the gradient
    divided by the mean gradient norm so that the step size does not
    depend on the scale of the losses (the paper instead updates `w` with
    the network's optimizer): `w <- w - learning_rate * dL_grad/dw /
    mean_j(n_j)`, then clips them to at least `min_weight` and
    renormalises them to sum to `T`.

    Each task's reference loss `L_i(0)` is its first finite, positive
    loss: usually the first step's, but a task whose first losses are 0
    (e.g. no labelled example in the batch, all masked by
    `sample_weight`), inf or NaN gets its reference later. A step updates
    only the tasks whose reference is set and whose loss (finite, > 0)
    and gradient norm (finite) are usable; the means run over them, the
    other tasks keep their weights and the updated ones are renormalised
    so that all still sum to `T`. (With every task usable, which is the
    ordinary case, this is the update above.) Weights, reference losses
    and the "initialised" flag are non-trainable variables saved with the
    model; a reference that is not set yet is stored as 0.

    It declares `requires_gradient_norms`: the training loop passes the
    norms of the task gradients w.r.t. the variables of the layer named
    `layer` (default: the last layer whose variables are shared).

    Args:
        alpha: finite float >= 0. Restoring-force exponent (1.5 in the
            paper).
        learning_rate: finite float > 0. Step size of the weight update.
        min_weight: finite float in [0, 1). Lower bound on each weight
            before the renormalisation (the weights average 1).
        layer: optional str. Name of the layer whose variables the
            gradient norms are taken at.
        num_tasks: optional int. Number of tasks (inferred when built).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_losses: `(T,)` tensor of task losses.

    Returns:
        Scalar tensor `sum_i w_i * L_i` (weights held constant).

    Example:

    ```python
    model = MultiTaskModel(inputs, outputs, strategy=GradNorm(alpha=1.5))
    ```

    Reference:
        Chen, Badrinarayanan, Lee and Rabinovich, 2018, "GradNorm:
        Gradient Normalization for Adaptive Loss Balancing in Deep
        Multitask Networks".
    """

    requires_gradient_norms = True

    def __init__(
        self, alpha=1.5, learning_rate=0.025, min_weight=1e-3, layer=None,
        num_tasks=None, **kwargs,
    ):
        super().__init__(num_tasks=num_tasks, **kwargs)
        if layer is not None and not isinstance(layer, str):
            raise TypeError(
                f"`layer` must be a layer name (a non-empty str) or None. "
                f"Received: layer={layer!r}"
            )
        if layer == "":
            raise ValueError(
                "`layer` must be a layer name (a non-empty str) or None. "
                f"Received: layer={layer!r}"
            )
        self.gradient_norm_layer = layer
        self.alpha = _check_float("alpha", alpha, 0.0)
        self.learning_rate = _check_float(
            "learning_rate", learning_rate, 0.0, low_allowed=False)
        self.min_weight = _check_float("min_weight", min_weight, 0.0,
                                       high=1.0)

    def build(self, input_shape):
        super().build(input_shape)
        state = dict(trainable=False, aggregation="only_first_replica")
        self.loss_weights = self.add_weight(
            name="loss_weights", shape=(self.num_tasks,),
            initializer="ones", **state,
        )
        self.initial_losses = self.add_weight(
            name="initial_losses", shape=(self.num_tasks,),
            initializer="ones", **state,
        )
        self.initialized = self.add_weight(
            name="initialized", shape=(), initializer="zeros", **state
        )

    def task_weights(self):
        return ops.convert_to_tensor(self.loss_weights)

    def update_step(self, task_losses, gradient_norms=None):
        """One GradNorm step on the weights.

        Args:
            task_losses: `(T,)` current (unweighted) task losses.
            gradient_norms: `(T,)` norms of the unweighted task losses'
                gradients w.r.t. the last shared layer.

        Returns:
            `(T,)` tensor, the new weights.
        """
        if gradient_norms is None:
            raise ValueError(
                "GradNorm needs `gradient_norms`, the (T,) norms of the "
                "task gradients at one shared layer. Received: "
                "gradient_norms=None"
            )
        if not self.built:
            raise ValueError(
                "Call `set_tasks(task_names)` before `update_step`: GradNorm "
                "does not know its tasks yet. Received: num_tasks=None"
            )
        num_tasks = self.num_tasks
        task_losses = ops.stop_gradient(
            _check_vector("task_losses", task_losses, num_tasks))
        gradient_norms = ops.stop_gradient(
            _check_vector("gradient_norms", gradient_norms, num_tasks))

        def usable(losses):
            return ops.logical_and(ops.isfinite(losses), losses > 0.0)

        reference = ops.convert_to_tensor(self.initial_losses)
        unset = ops.logical_or(self.initialized < 0.5,
                               ops.logical_not(usable(reference)))
        reference = ops.where(
            unset, ops.where(usable(task_losses), task_losses, 0.0),
            reference,
        )
        self.initial_losses.assign(reference)
        self.initialized.assign(ops.ones_like(self.initialized.value))
        active = ops.logical_and(
            ops.logical_and(usable(reference), usable(task_losses)),
            ops.isfinite(gradient_norms),
        )
        weights = ops.convert_to_tensor(self.loss_weights)
        gradient = gradnorm_weight_gradient(
            weights, task_losses, reference, gradient_norms, self.alpha,
            active=active,
        )
        norms = ops.where(active, gradient_norms, 0.0)
        gradient = gradient / ops.maximum(
            _masked_mean(norms, active), 1e-20)
        new = ops.maximum(weights - self.learning_rate * gradient,
                          self.min_weight)
        # the inactive tasks keep their weights; the active ones share
        # what is left of the total T
        kept = ops.sum(ops.where(active, 0.0, weights))
        new = new * ((num_tasks - kept)
                     / ops.sum(ops.where(active, new, 0.0)))
        new = ops.where(active, new, weights)
        finite = ops.all(ops.isfinite(new))
        new = ops.where(finite, new, weights)
        self.loss_weights.assign(new)
        return new

    def get_config(self):
        config = super().get_config()
        config.update({
            "alpha": self.alpha,
            "learning_rate": self.learning_rate,
            "min_weight": self.min_weight,
            "layer": self.gradient_norm_layer,
        })
        return config
