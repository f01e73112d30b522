"""GradNorm: balancing training rates through gradient norms (Chen et al.)."""

import keras
from keras import ops

from .base import LossWeighting


def gradnorm_weight_gradient(
    weights, task_losses, initial_losses, gradient_norms, alpha=1.5
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
        alpha: float. Strength of the restoring force (1.5 in the paper).

    Returns:
        `(T,)` tensor, the gradient of `L_grad` w.r.t. the weights.

    Example:

    ```python
    gradnorm_weight_gradient([1., 1.], [1., 1.], [1., 1.], [2., 1.])
    # G = [2, 1], target = [1.5, 1.5] -> [2., -1.]
    ```
    """
    weights = ops.convert_to_tensor(weights, "float32")
    loss_ratios = ops.convert_to_tensor(task_losses, "float32") / (
        ops.convert_to_tensor(initial_losses, "float32")
    )
    inverse_rates = loss_ratios / ops.mean(loss_ratios)
    norms = ops.convert_to_tensor(gradient_norms, "float32")
    weighted_norms = weights * norms
    target = ops.stop_gradient(
        ops.mean(weighted_norms) * inverse_rates ** alpha
    )
    return ops.sign(weighted_norms - target) * norms


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
    renormalises them to sum to `T`. The first call also
    records the initial losses `L_i(0)`. Weights, initial losses and the
    "initialised" flag are non-trainable variables saved with the model.

    It declares `requires_gradient_norms`: the training loop passes the
    norms of the task gradients w.r.t. the variables of the layer named
    `layer` (default: the last layer whose variables are shared).

    Args:
        alpha: float >= 0. Restoring-force exponent (1.5 in the paper).
        learning_rate: float > 0. Step size of the weight update.
        min_weight: float >= 0. Lower bound on each weight before the
            renormalisation.
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
                f"`layer` must be a layer name or None. Received: "
                f"layer={layer!r}"
            )
        self.gradient_norm_layer = layer
        if not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(
                f"`alpha` must be a float >= 0. Received: alpha={alpha!r}"
            )
        if not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
            raise ValueError(
                "`learning_rate` must be a positive float. "
                f"Received: learning_rate={learning_rate!r}"
            )
        self.alpha = float(alpha)
        self.learning_rate = float(learning_rate)
        self.min_weight = float(min_weight)

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
        task_losses = ops.stop_gradient(
            ops.convert_to_tensor(task_losses, "float32")
        )
        gradient_norms = ops.stop_gradient(
            ops.convert_to_tensor(gradient_norms, "float32")
        )
        first = self.initialized < 0.5
        initial = ops.where(
            first, task_losses, ops.convert_to_tensor(self.initial_losses)
        )
        self.initial_losses.assign(initial)
        self.initialized.assign(ops.ones_like(self.initialized.value))
        weights = ops.convert_to_tensor(self.loss_weights)
        gradient = gradnorm_weight_gradient(
            weights, task_losses, initial, gradient_norms, self.alpha
        )
        gradient = gradient / ops.maximum(ops.mean(gradient_norms), 1e-20)
        new = ops.maximum(weights - self.learning_rate * gradient,
                          self.min_weight)
        new = new * (self.num_tasks / ops.sum(new))
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
