"""`MultiTaskModel`: a Keras model whose `fit` applies a multi-task strategy.

A plain multi-output `keras.Model` already computes and logs one loss per
output (`a_loss`, `val_b_loss`, ... in `history.history`), but combines them
with fixed float `loss_weights` only. `MultiTaskModel` adds what Keras does
not do: task weights that change during training (a strategy from
`mtlbook.weighting`: uncertainty weighting, DWA, GradNorm, ...), gradient
methods that combine the per-task gradients of the shared parameters
(PCGrad, MGDA, CAGrad) while each task head gets its own task's gradient,
the current task weights in the logs (`<task>_weight`), and optionally the
mean pairwise cosine of the task gradients on the shared parameters
(`gradient_cosine`). It works with ordinary `compile` / `fit` / `evaluate`,
`tf.data`, Keras callbacks, `.keras` saving,
`tf.distribute.MirroredStrategy` and the `mixed_float16` policy.

It only knows the strategy protocol of `mtlbook.weighting.base`: a strategy
that needs nothing but the losses runs inside Keras's own `train_step`
(this model overrides `compute_loss`); one that declares it needs per-task
gradients or gradient norms gets them from a `tf.GradientTape` step. The
same plumbing is public for hand-written loops: `task_gradient_matrix`,
`cross_replica_sum` and, in `mtlbook.weighting.base`, `flatten_gradients`
and `unflatten_gradients`. TensorFlow backend only.

Example:

```python
inputs = keras.Input((8, 8, 1))
flat = keras.layers.Flatten()(inputs)
trunk = keras.layers.Dense(32, activation="relu")(flat)
outputs = {"digit": keras.layers.Dense(10, name="digit")(trunk),
           "parity": keras.layers.Dense(2, name="parity")(trunk)}
model = MultiTaskModel(inputs, outputs, strategy=PCGrad())
model.compile(
    optimizer="adam",
    loss={t: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
          for t in outputs},
    metrics={t: ["accuracy"] for t in outputs},
)
history = model.fit(x, y, validation_data=(x_val, y_val), epochs=5)
history.history["parity_weight"], history.history["val_digit_accuracy"]
```
"""

import inspect

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mtlbook.weighting.base import (
    EqualWeighting,
    Strategy,
    UpdateEpoch,
    flatten_gradients,
    unflatten_gradients,
)


class _FunctionLoss(keras.losses.Loss):
    """A per-sample loss function as a `keras.losses.Loss` (mean reduced)."""

    def __init__(self, function, name=None):
        super().__init__(name=name or getattr(function, "__name__", "loss"))
        self.function = function

    def call(self, y_true, y_pred):
        return self.function(y_true, y_pred)


def _task_loss(identifier, task=None):
    """Resolves one task's loss as `compile` does (`keras.losses.get`)."""
    try:
        loss = keras.losses.get(identifier)
    except ValueError as error:
        raise ValueError(
            f"`loss` of task {task!r} must be a keras.losses.Loss, a Keras "
            f"loss name or a function ({error}). Received: "
            f"loss={{{task!r}: {identifier!r}}}"
        ) from error
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        name = identifier if isinstance(identifier, str) else None
        return _FunctionLoss(loss, name=name)
    raise TypeError(
        "Each loss must be a keras.losses.Loss, a loss name or a function. "
        f"Received: loss={identifier!r}"
    )


def _check_task_keys(argument, value, tasks, require_all):
    if not isinstance(value, dict):
        raise TypeError(
            f"`{argument}` must be a dict keyed by task name {list(tasks)}. "
            f"Received: {argument}={value!r}"
        )
    unknown = sorted(set(value) - set(tasks))
    missing = sorted(set(tasks) - set(value)) if require_all else []
    if unknown or missing:
        raise ValueError(
            f"`{argument}` must use the model's task names {list(tasks)}. "
            f"Received: unknown={unknown}, missing={missing}"
        )


def _check_bool(argument, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"`{argument}` must be a bool (True or False). "
            f"Received: {argument}={value!r}"
        )
    return bool(value)


def _check_targets(y, tasks, argument="y"):
    """Raises a clear error unless `y` is a dict with exactly `tasks`."""
    if not isinstance(y, dict):
        raise ValueError(
            f"The targets in `{argument}` must be a dict keyed by task name "
            f"{list(tasks)}. Received: targets of type {type(y).__name__}"
        )
    missing = [t for t in tasks if t not in y]
    unknown = sorted(str(k) for k in y if k not in tasks)
    if missing or unknown:
        raise ValueError(
            f"The targets in `{argument}` must have one entry per task "
            f"{list(tasks)} (keys that are not tasks are not ignored). "
            f"Received: keys={sorted(str(k) for k in y)}, "
            f"missing={missing}, unknown={unknown}"
        )


def _all_finite(tensors):
    """Scalar bool tensor: every entry of every tensor is finite."""
    flags = [ops.all(ops.isfinite(t)) for t in tensors if t is not None]
    return ops.all(ops.stack(flags))


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def cross_replica_sum(value):
    """Sums a tensor over the replicas of a `tf.distribute` run.

    Outside a distribution strategy (or with one replica) it returns
    `value` unchanged. Call it in the replica context, e.g. inside a
    `train_step`.

    Args:
        value: tensor.

    Returns:
        Tensor of the same shape: the sum over replicas.
    """
    if _replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, value
    )


def task_gradient_matrix(tape, task_losses, variables):
    """The `(T, D)` matrix of per-task gradients, for a gradient method.

    Row `i` is the gradient of `task_losses[i]` with respect to
    `variables`, flattened by `flatten_gradients` (a variable that task
    `i` does not reach gives zeros), summed over the replicas of a
    distributed run. It costs one backward pass per task.

    Args:
        tape: a `tf.GradientTape(persistent=True)` that recorded the
            forward pass.
        task_losses: sequence of `T` scalar tensors (or a `(T,)` tensor)
            computed under `tape`.
        variables: list of the (shared) variables.

    Returns:
        `(T, D)` float32 tensor.

    Example:

    ```python
    with tf.GradientTape(persistent=True) as tape:
        predictions = model(x, training=True)
        losses = [loss_fn[t](y[t], predictions[t]) for t in tasks]
    matrix = task_gradient_matrix(tape, losses, shared)
    update = strategy.combine_gradients(matrix, optimizer.iterations)
    optimizer.apply_gradients(
        zip(unflatten_gradients(update, shared), shared))
    ```
    """
    if not isinstance(variables, (list, tuple)) or not variables:
        raise ValueError(
            "`variables` must be a non-empty list of variables. "
            f"Received: variables={variables!r}"
        )
    if not isinstance(tape, tf.GradientTape):
        raise TypeError(
            "`tape` must be a tf.GradientTape(persistent=True). "
            f"Received: tape={tape!r}"
        )
    if isinstance(task_losses, (list, tuple)) and not task_losses:
        raise ValueError(
            "`task_losses` must hold one scalar loss per task. "
            f"Received: task_losses={task_losses!r}"
        )
    rows = [
        flatten_gradients(tape.gradient(loss, variables), variables)
        for loss in task_losses
    ]
    return cross_replica_sum(ops.stack(rows))


def mean_pairwise_cosine(task_gradients):
    """Mean cosine similarity over all pairs of rows of a `(T, D)` tensor.

    Args:
        task_gradients: `(T, D)` tensor with `T >= 2`.

    Returns:
        Scalar tensor, `mean_{i<j} g_i . g_j / (|g_i| |g_j|)`.

    Example:

    ```python
    mean_pairwise_cosine([[1.0, 0.0], [1.0, 1.0]])  # 0.7071
    ```
    """
    gradients = ops.cast(ops.convert_to_tensor(task_gradients), "float32")
    if len(gradients.shape) != 2 or gradients.shape[0] is None or (
        gradients.shape[0] < 2
    ):
        raise ValueError(
            "`task_gradients` must have shape (num_tasks, num_parameters) "
            "with a known num_tasks >= 2 (a cosine needs a pair). "
            f"Received: task_gradients.shape={gradients.shape}"
        )
    # rows far from 1 in size are first divided by their largest entry, so
    # that the squares neither underflow nor overflow (others: by 1, exact)
    largest = ops.max(ops.abs(gradients), axis=1, keepdims=True)
    extreme = ops.logical_and(
        largest > 0.0, ops.logical_or(largest < 1e-15, largest > 1e15))
    gradients = gradients / ops.where(extreme, largest, 1.0)
    norms = ops.sqrt(ops.sum(gradients * gradients, axis=1, keepdims=True))
    unit = gradients / ops.maximum(norms, 1e-20)
    cosine = ops.matmul(unit, ops.transpose(unit))
    num_tasks = gradients.shape[0]
    upper = np.triu(np.ones((num_tasks, num_tasks), "float32"), k=1)
    return ops.sum(cosine * upper) / upper.sum()


def _overrides(strategy, method):
    return getattr(type(strategy), method) is not getattr(Strategy, method)


@keras.saving.register_keras_serializable(package="mtlbook")
class MultiTaskModel(keras.Model):
    """A multi-output Keras model trained with a multi-task strategy.

    Built like a functional model from inputs and a dict
    `{task: output tensor}` (or from an existing functional `network` with
    dict outputs). Every trainable variable of the network is sorted once,
    by which task outputs depend on it: a variable reached by one task
    only belongs to that task, one reached by several tasks is shared
    (`shared_layers` overrides the shared set).

    Training follows the strategy protocol (`mtlbook.weighting.base`):

    - a strategy that needs only the losses (equal, static, uncertainty
      weighting, DWA) runs in Keras's own `train_step`: `compute_loss`
      returns `strategy.combine_losses` of the `T` task losses;
    - a strategy that declares `requires_task_gradients` (PCGrad, MGDA,
      CAGrad) gets the `(T, D)` per-task gradients of the shared
      variables and returns their update; task-specific variables get
      their own task's gradient, never projected;
    - one that declares `requires_gradient_norms` (GradNorm) gets the
      task gradient norms at `strategy.gradient_norm_layer` (default: the
      last layer with shared variables) in `update_step`.

    `update_step` runs after every training step and `update_epoch` after
    every epoch of `fit` (with `train_on_batch`, call
    `model.strategy.update_epoch()` yourself). Under `tf.distribute`,
    per-task gradients are summed over replicas before a gradient method
    sees them; under `mixed_float16` they are unscaled before and rescaled
    after, so the `LossScaleOptimizer` still skips steps with non-finite
    gradients.

    Non-finite steps. By default a batch whose loss is NaN or infinite
    (a NaN in the inputs or labels, an overflow, a learning rate too
    large) is applied as Keras applies it: the weights, the optimizer's
    slots and the strategy's state (DWA's loss sums, GradNorm's initial
    losses, the uncertainty log-variances) become NaN.
    `keras.callbacks.TerminateOnNaN` only stops `fit` after that update.
    With `skip_nonfinite=True` every step checks its task losses
    (and regularization terms) and its combined gradient: when any entry
    is NaN or infinite, it applies nothing, neither the optimizer update
    (weights, slots and `optimizer.iterations` stay as they were) nor the
    strategy's `update_step`, and adds 1 to the `skipped_steps` log
    (per epoch). Only applied steps enter the logged losses and metrics,
    so `TerminateOnNaN` never fires. It is what `LossScaleOptimizer`
    does on a float16 overflow; with one, the guard skips on non-finite
    losses and leaves non-finite gradients to the `LossScaleOptimizer` (so
    it can lower its scale), skipping only the strategy's `update_step`.
    The guard runs every strategy in the `tf.GradientTape` step and costs
    one pass over the gradients; it is off by default so that a finite
    run takes Keras's own `train_step` unchanged (the guarded step gives
    the same weights on finite data). It is not supported under a
    `tf.distribute` strategy with more than one replica.

    Args:
        inputs: Keras input tensor(s) (functional construction).
        outputs: dict `{task: output tensor}`.
        strategy: a `mtlbook.weighting` strategy; default `EqualWeighting()`.
        shared_layers: optional list of layer names whose variables are the
            shared parameters. Other variables reached by several tasks
            then get the plain sum of those tasks' gradients.
        log_conflict: bool. Log `gradient_cosine`, the mean pairwise cosine
            of the task gradients on the shared variables (costs `T` extra
            backward passes for loss-weighting strategies).
        network: a functional `keras.Model` with dict outputs, instead of
            `inputs` and `outputs`.
        skip_nonfinite: bool. Skip (and count in `skipped_steps`) every
            training step whose losses or gradient are not finite, see
            above. Default False.
        **kwargs: Base model arguments (`name`, ...).

    Example:

    ```python
    model = MultiTaskModel(inputs, outputs, strategy=DynamicWeightAverage(),
                           skip_nonfinite=True)
    model.compile(optimizer="adam", loss={"a": "mse", "b": "mse"})
    model.fit(x, y, epochs=3).history["skipped_steps"]  # e.g. [0., 1., 0.]
    ```

    Reference:
        Ruder, 2017, "An Overview of Multi-Task Learning in Deep Neural
        Networks".
    """

    def __init__(
        self, inputs=None, outputs=None, strategy=None, shared_layers=None,
        log_conflict=False, network=None, skip_nonfinite=False, **kwargs,
    ):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "MultiTaskModel needs the TensorFlow backend (it takes "
                "per-task gradients with tf.GradientTape); the strategies, "
                "layers and gradient functions of mtlbook.weighting work on "
                "every backend. Received: keras.backend.backend()="
                f"{keras.backend.backend()!r} (set KERAS_BACKEND="
                "tensorflow)"
            )
        log_conflict = _check_bool("log_conflict", log_conflict)
        skip_nonfinite = _check_bool("skip_nonfinite", skip_nonfinite)
        if shared_layers is not None and (
            not isinstance(shared_layers, (list, tuple))
            or not all(isinstance(name, str) for name in shared_layers)
        ):
            raise TypeError(
                "`shared_layers` must be None or a list (or tuple) of layer "
                f"names. Received: shared_layers={shared_layers!r}"
            )
        if network is not None and (inputs is not None
                                    or outputs is not None):
            raise ValueError(
                "Pass either `network` or `inputs` and `outputs`, not both. "
                f"Received: network={network.name!r} and inputs/outputs"
                if isinstance(network, keras.Model) else
                "Pass either `network` or `inputs` and `outputs`, not both. "
                f"Received: network={network!r} and inputs/outputs"
            )
        super().__init__(**kwargs)
        if network is None:
            if not isinstance(outputs, dict) or not outputs:
                raise TypeError(
                    "`outputs` must be a non-empty dict {task: tensor}. "
                    f"Received: outputs={type(outputs).__name__}"
                )
            network = keras.Model(inputs, outputs, name="network")
        if not isinstance(network, keras.Model):
            raise TypeError(
                "`network` must be a functional keras.Model with dict "
                f"outputs. Received: network={network!r}"
            )
        if not isinstance(network.output, dict):
            raise TypeError(
                "`network` must be a functional model with dict outputs "
                f"{{task: tensor}}. Received: outputs of type "
                f"{type(network.output).__name__}"
            )
        self.network = network
        self.tasks = list(network.output)
        if strategy is None:
            strategy = EqualWeighting()
        if not isinstance(strategy, Strategy):
            raise TypeError(
                "`strategy` must be a mtlbook.weighting strategy. "
                f"Received: strategy={strategy!r}"
            )
        strategy.set_tasks(self.tasks)
        self.strategy = strategy
        self.log_conflict = log_conflict
        self.skip_nonfinite = skip_nonfinite
        self.shared_layers = (
            None if shared_layers is None else list(shared_layers)
        )
        self._split_variables()
        needs_shared = strategy.requires_task_gradients or self.log_conflict
        if needs_shared and not self.shared_variables:
            raise ValueError(
                f"`strategy` {type(strategy).__name__} (or log_conflict) "
                "needs shared variables, but no trainable variable is "
                "reached by two or more tasks. Received: "
                f"shared_layers={self.shared_layers}"
            )
        self._norm_variables = (
            self._gradient_norm_variables()
            if strategy.requires_gradient_norms else []
        )
        self._tape_step = (
            strategy.requires_task_gradients
            or strategy.requires_gradient_norms or self.log_conflict
            or self.skip_nonfinite
        )
        self._step_hook = _overrides(strategy, "update_step")
        # what Keras does not log: per-task losses, weights and conflict
        self.loss_trackers = {
            t: keras.metrics.Mean(name=f"{t}_loss") for t in self.tasks
        }
        self.conflict_tracker = None
        if self.log_conflict:
            self.conflict_tracker = keras.metrics.Mean(name="gradient_cosine")
            self.last_gradient_cosine = self.add_weight(
                name="last_gradient_cosine", shape=(), initializer="zeros",
                trainable=False, aggregation="only_first_replica",
            )
        self.skipped_tracker = None
        if self.skip_nonfinite:
            self.skipped_tracker = keras.metrics.Sum(name="skipped_steps")
        self.task_losses = None
        self.built = True

    # ----------------------------------------------------------- structure
    def _split_variables(self):
        found = []
        if (tf.distribute.has_strategy()
                and tf.distribute.in_cross_replica_context()):
            # Mirrored variables are only differentiable in a replica context.
            tf.distribute.get_strategy().run(
                lambda: found.append(self._variable_owners()))
        else:
            found.append(self._variable_owners())
        owners = found[0]
        self._owners = owners
        variables = self.network.trainable_variables
        if self.shared_layers is None:
            shared = [v for v in variables if len(owners[id(v)]) > 1]
        else:
            names = {layer.name for layer in self.network.layers}
            unknown = sorted(set(self.shared_layers) - names)
            if unknown:
                raise ValueError(
                    "`shared_layers` must name layers of the network. "
                    f"Received unknown names: {unknown}"
                )
            ids = {
                id(v) for name in self.shared_layers
                for v in self.network.get_layer(name).trainable_variables
            }
            shared = [v for v in variables if id(v) in ids]
        shared_ids = {id(v) for v in shared}
        self.shared_variables = shared
        self.task_variables = {
            t: [v for v in variables
                if id(v) not in shared_ids and t in owners[id(v)]]
            for t in self.tasks
        }
        # (position in network variables, owning task indices), unshared
        self._own_positions = [
            (i, [self.tasks.index(t) for t in owners[id(v)]])
            for i, v in enumerate(variables)
            if id(v) not in shared_ids and owners[id(v)]
        ]
        self._shared_positions = [
            i for i, v in enumerate(variables) if id(v) in shared_ids
        ]

    def _variable_owners(self):
        """`{id(variable): [tasks whose outputs depend on it]}`."""
        variables = self.network.trainable_variables
        dummy = [
            ops.zeros(
                (2,) + tuple(1 if d is None else d for d in x.shape[1:]),
                dtype=x.dtype,
            )
            for x in self.network.inputs
        ]
        with tf.GradientTape(persistent=True) as tape:
            predictions = self.network(
                dummy[0] if len(dummy) == 1 else dummy, training=False
            )
            sums = {t: ops.sum(ops.cast(predictions[t], "float32"))
                    for t in self.tasks}
        owners = {id(v): [] for v in variables}
        for task in self.tasks:
            for g, v in zip(tape.gradient(sums[task], variables), variables):
                if g is not None:
                    owners[id(v)].append(task)
        del tape
        return owners

    def _gradient_norm_variables(self):
        name = self.strategy.gradient_norm_layer
        shared_ids = {id(v) for v in self.shared_variables}
        if name is not None:
            names = [layer.name for layer in _flat_layers(self.network)]
            if name not in names:
                raise ValueError(
                    f"`{type(self.strategy).__name__}`'s gradient norm "
                    f"layer must name a layer of the network. Received: "
                    f"layer={name!r}"
                )
            layer = [la for la in _flat_layers(self.network)
                     if la.name == name][0]
            found = list(layer.trainable_variables)
        else:
            found = []
            for layer in reversed(_flat_layers(self.network)):
                found = [v for v in layer.trainable_variables
                         if id(v) in shared_ids]
                if found and not getattr(layer, "layers", None):
                    break
        if not found:
            raise ValueError(
                f"`{type(self.strategy).__name__}` needs gradient norms at "
                "a shared layer with trainable variables; none was found. "
                f"Received: layer={name!r}"
            )
        unreached = self._unreached_tasks(found)
        if unreached:
            chosen = [la.name for la in _flat_layers(self.network)
                      if any(v is found[0] for v in la.trainable_variables)]
            candidates = [
                la.name for la in reversed(_flat_layers(self.network))
                if not getattr(la, "layers", None) and la.trainable_variables
                and not self._unreached_tasks(la.trainable_variables)
            ]
            hint = (f" such as GradNorm(layer={candidates[0]!r})"
                    if candidates else "")
            raise ValueError(
                f"`{type(self.strategy).__name__}` needs gradient norms at "
                "a layer whose variables are shared by every task (a task "
                "that does not reach it would have a zero gradient norm). "
                f"The tasks {unreached} do not reach layer {chosen[-1]!r}; "
                f"name a layer that every task reaches{hint}. "
                f"Received: layer={name!r}"
            )
        return found

    def _unreached_tasks(self, variables):
        reached = {t for v in variables for t in self._owners.get(id(v), [])}
        return [t for t in self.tasks if t not in reached]

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    # ------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training, with one loss (and metrics) per task.

        Metrics are Keras's own (`compile(metrics=...)`, logged as
        `<task>_<metric>`); the losses are resolved as Keras resolves them
        and combined by the strategy, so `loss_weights` is not accepted.

        Args:
            optimizer: optimizer name or instance.
            loss: dict `{task: loss}` naming every task exactly.
            metrics: optional dict `{task: [metric, ...]}` over task names.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, `run_eagerly`, ...).
        """
        _check_task_keys("loss", loss, self.tasks, require_all=True)
        if metrics is not None:
            _check_task_keys("metrics", metrics, self.tasks,
                             require_all=False)
        for forbidden in ("loss_weights", "weighted_metrics"):
            if kwargs.get(forbidden) is not None:
                raise ValueError(
                    f"`{forbidden}` is not supported by MultiTaskModel; use "
                    f"a strategy such as StaticWeighting. Received: "
                    f"{forbidden}={kwargs[forbidden]!r}"
                )
        kwargs.pop("loss_weights", None)
        kwargs.pop("weighted_metrics", None)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.task_losses = {t: _task_loss(loss[t], t) for t in self.tasks}
        self._loss_spec = dict(loss)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(
                self._loss_spec)
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    # ---------------------------------------------------------------- steps
    def compute_task_losses(self, y, y_pred, sample_weight=None):
        """`(T,)` task losses of a batch, each task's compiled loss.

        Under `tf.distribute` each is the loss of this replica's batch (not
        divided by the number of replicas, unlike a Keras loss's value).

        Args:
            y: dict `{task: targets}`.
            y_pred: dict `{task: predictions}`.
            sample_weight: None, one array for every task, or a dict
                `{task: array}` (a task without an entry is unweighted).

        Returns:
            `(T,)` float32 tensor, in the order of `model.tasks`.

        Raises:
            ValueError: `y` misses a task or has keys that are not tasks.

        Example:

        ```python
        losses = model.compute_task_losses(y, model(x))  # (T,)
        ```
        """
        _check_targets(y, self.tasks)
        if isinstance(sample_weight, dict):
            unknown = sorted(str(k) for k in sample_weight
                             if k not in self.tasks)
            if unknown:
                raise ValueError(
                    "`sample_weight` as a dict must be keyed by task name "
                    f"{self.tasks} (a task without an entry is unweighted). "
                    f"Received unknown keys: {unknown}"
                )
        if self.task_losses is None:
            raise ValueError(
                "Call `compile` (with one loss per task) before training or "
                "evaluating the model. Received: a model not compiled"
            )
        replicas = _replicas()
        losses = []
        for task in self.tasks:
            weight = (sample_weight.get(task) if isinstance(sample_weight, dict)
                      else sample_weight)
            value = ops.cast(
                self.task_losses[task](y[task], y_pred[task], weight),
                "float32")
            losses.append(value * replicas if replicas > 1 else value)
        return ops.stack(losses)

    def _extra_loss(self):
        """Regularization and `add_loss` terms, scaled for distribution."""
        if not self.losses:
            return None
        return ops.sum([ops.sum(ops.cast(v, "float32"))
                        for v in self.losses]) / _replicas()

    def _track(self, x, losses):
        batch = ops.shape(tf.nest.flatten(x)[0])[0]
        for i, task in enumerate(self.tasks):
            self.loss_trackers[task].update_state(
                losses[i], sample_weight=batch)

    def _global_losses(self, losses):
        if _replicas() == 1:
            return losses
        return cross_replica_sum(losses) / _replicas()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """The strategy's total of the task losses (plus regularization).

        Keras's `train_step` and `test_step` call it: it is where a loss
        weighting acts. For a gradient method (trained by the tape step)
        it is only evaluated, and reports the plain sum of the losses.
        """
        if self.task_losses is None:
            raise ValueError("Call `compile` before training or evaluating.")
        losses = self.compute_task_losses(y, y_pred, sample_weight)
        if self.strategy.requires_task_gradients:
            total = ops.sum(losses)
        else:
            total = self.strategy.combine_losses(losses)
        if training and self._step_hook and not self._tape_step:
            self.strategy.update_step(self._global_losses(losses))
        self._track(x, losses)
        if _replicas() > 1:
            total = total / _replicas()
        extra = self._extra_loss()
        return total if extra is None else total + extra

    def train_step(self, data):
        if not self._tape_step:
            return super().train_step(data)
        return self._tape_train_step(data)

    def _loss_scale(self):
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return ops.cast(self.optimizer.dynamic_scale, "float32")
        return None

    def _tape_train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replicas = _replicas()
        strategy = self.strategy
        method = strategy.requires_task_gradients
        network_vars = self.network.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            losses = self.compute_task_losses(y, y_pred, sample_weight)
            extra = self._extra_loss()
            # per-task losses as the optimizer sees them: / replicas, scaled
            scaled = [self.optimizer.scale_loss(losses[i] / replicas)
                      for i in range(len(self.tasks))]
            if method:
                total = ops.sum(losses)
                if extra is not None:
                    extra_scaled = self.optimizer.scale_loss(extra)
            else:
                total = strategy.combine_losses(losses)
                objective = total / replicas
                if extra is not None:
                    objective = objective + extra
                objective = self.optimizer.scale_loss(objective)
        scale = self._loss_scale()
        barrier, matrix, norms = [], None, None
        if method:
            variables, gradients, matrix = self._method_gradients(
                tape, scaled, scale)
            if extra is not None:
                regular = tape.gradient(extra_scaled, variables)
                gradients = [g if r is None else (r if g is None else g + r)
                             for g, r in zip(gradients, regular)]
            barrier.append(matrix)
        else:
            variables = network_vars + strategy.trainable_variables
            gradients = tape.gradient(objective, variables)
            if self.log_conflict:
                matrix = task_gradient_matrix(
                    tape, scaled, self.shared_variables)
                matrix = matrix if scale is None else matrix / scale
                barrier.append(matrix)
        global_losses = losses
        if strategy.requires_gradient_norms:
            norms, global_losses = self._norms_and_losses(
                tape, scaled, losses, scale)
            barrier.extend([norms, global_losses])
        elif self._step_hook:
            global_losses = self._global_losses(losses)
            barrier.append(global_losses)
        del tape
        if barrier and replicas > 1:
            # all replicas must run their collectives in the same order
            with tf.control_dependencies(barrier):
                gradients = [None if g is None else tf.identity(g)
                             for g in gradients]
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        hook = self._step_hook or strategy.requires_gradient_norms

        def track():
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(
                        total if extra is None else total + extra * replicas,
                        sample_weight=ops.shape(tf.nest.flatten(x)[0])[0])
            self._track(x, losses)
            if self.log_conflict:
                cosine = mean_pairwise_cosine(matrix)
                self.conflict_tracker.update_state(cosine)
                self.last_gradient_cosine.assign(cosine)
            return self.compute_metrics(x, y, y_pred, sample_weight)

        if not self.skip_nonfinite:
            self.optimizer.apply_gradients(pairs)
            if hook:
                strategy.update_step(global_losses, norms)
            return track()
        if replicas > 1:
            raise ValueError(
                "`skip_nonfinite=True` is not supported under a "
                "tf.distribute strategy with more than one replica. "
                f"Received: {replicas} replicas"
            )
        return self._guarded_update(
            pairs, [losses, extra], hook, global_losses, norms, track)

    def _guarded_update(self, pairs, losses, hook, global_losses, norms,
                        track):
        """Applies the step only if `losses` and gradients are finite."""
        losses_finite = _all_finite(losses)
        gradients_finite = _all_finite([g for g, _ in pairs])
        scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

        def update_strategy():
            self.strategy.update_step(global_losses, norms)

        def apply():
            self.optimizer.apply_gradients(pairs)
            if hook and scaled:
                # non-finite gradients: the LossScaleOptimizer skips them
                ops.cond(gradients_finite, update_strategy, lambda: None)
            elif hook:
                update_strategy()
            track()

        def skip():
            self.skipped_tracker.update_state(1.0)

        applied = (losses_finite if scaled
                   else ops.logical_and(losses_finite, gradients_finite))
        ops.cond(applied, apply, skip)
        return self._metric_logs()

    def _metric_logs(self):
        logs = self.get_metrics_result()
        if len(self.tasks) > 1:
            return logs
        ours = {"loss", "gradient_cosine", "skipped_steps",
                f"{self.tasks[0]}_loss"}
        return {k if k in ours else f"{self.tasks[0]}_{k}": v
                for k, v in logs.items()}

    def _method_gradients(self, tape, scaled, scale):
        """Gradient-method update of the shared variables, own gradients of
        the task variables: one backward pass per task."""
        network_vars = self.network.trainable_variables
        per_task = [tape.gradient(loss, network_vars) for loss in scaled]
        shared = self.shared_variables
        rows = [flatten_gradients([g[i] for i in self._shared_positions],
                                  shared) for g in per_task]
        matrix = cross_replica_sum(ops.stack(rows))
        if scale is not None:
            matrix = matrix / scale
        combined = self.strategy.combine_gradients(
            matrix, step=self.optimizer.iterations)
        if scale is not None:
            combined = combined * scale
        variables = list(shared)
        gradients = unflatten_gradients(combined / _replicas(), shared)
        for position, owners in self._own_positions:
            total = None
            for task in owners:
                g = per_task[task][position]
                if g is not None:
                    total = g if total is None else total + g
            variables.append(network_vars[position])
            gradients.append(total)
        return variables, gradients, matrix

    def _norms_and_losses(self, tape, scaled, losses, scale):
        """Task gradient norms at the strategy's layer and the losses,
        both over all replicas (one all-reduce)."""
        variables = self._norm_variables
        num_tasks = len(self.tasks)
        rows = ops.stack([
            flatten_gradients(tape.gradient(loss, variables), variables)
            for loss in scaled])
        packed = ops.concatenate(
            [ops.reshape(rows, (-1,)), losses / _replicas()])
        packed = cross_replica_sum(packed)
        rows = ops.reshape(packed[:-num_tasks], (num_tasks, -1))
        norms = ops.sqrt(ops.sum(rows * rows, axis=1))
        if scale is not None:
            norms = norms / scale
        return norms, packed[-num_tasks:]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras's metrics; with one task, named `<task>_<metric>` too."""
        super().compute_metrics(x, y, y_pred, sample_weight)
        return self._metric_logs()

    def test_step(self, data):
        logs = super().test_step(data)
        return {k: v for k, v in logs.items()
                if k not in ("gradient_cosine", "skipped_steps")}

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, plus the strategy's per-epoch hook.

        Adds `UpdateEpoch(self.strategy)` first in the callbacks: it logs
        each task's weight at the end of the epoch (`<task>_weight`, in
        the history; no cost per step), then runs `update_epoch`, so later
        callbacks see the next epoch's weights. Takes the same arguments
        as `keras.Model.fit`, positional or by keyword.

        Raises:
            ValueError: the model is not compiled, or the targets of `y`
                or `validation_data` are not a dict with one entry per
                task (checked before training for arrays and
                `tf.data.Dataset`s, when the step is traced otherwise).
        """
        if self.task_losses is None or getattr(self, "optimizer",
                                               None) is None:
            raise ValueError(
                "Call `compile` (an optimizer and one loss per task) before "
                "`fit`. Received: a model not compiled"
            )
        replicas = self.distribute_strategy.num_replicas_in_sync
        if self.skip_nonfinite and replicas > 1:
            raise ValueError(
                "`skip_nonfinite=True` is not supported under a "
                "tf.distribute strategy with more than one replica. "
                f"Received: {replicas} replicas"
            )
        if not self.optimizer.built:
            # a LossScaleOptimizer's scale exists once built (tape step)
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        arguments = dict(bound.arguments)
        arguments.pop("self")
        extra = arguments.pop("kwargs", {})
        self._check_data(arguments.get("x"), arguments.get("y"), "y")
        validation = arguments.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self._check_data(validation[0], validation[1], "validation_data")
        elif validation is not None:
            self._check_data(validation, None, "validation_data")
        callbacks = list(arguments.get("callbacks") or [])
        # a shuffled `to_dataset` pipeline: tell it the epoch Keras (re)starts
        # at, so that a run resumed by BackupAndRestore sees the same batches
        epoch_callback = getattr(arguments.get("x"), "epoch_callback", None)
        if isinstance(epoch_callback, keras.callbacks.Callback) and not any(
                c is epoch_callback for c in callbacks):
            callbacks.insert(0, epoch_callback)
        arguments["callbacks"] = [UpdateEpoch(self.strategy), *callbacks]
        try:
            return super().fit(**arguments, **extra)
        except (ValueError, TypeError):
            # a step that failed to trace must be traced afresh next time
            self.train_function = self.test_function = None
            raise

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, with the targets checked first.

        Takes the same arguments as `keras.Model.evaluate`.

        Raises:
            ValueError: the targets are not a dict with one entry per task.
        """
        self._check_data(x, y, "y")
        try:
            return super().evaluate(x, y, *args, **kwargs)
        except (ValueError, TypeError):
            self.test_function = None
            raise

    def _check_data(self, x, y, argument):
        """Checks dict targets early: arrays, or a dataset's structure."""
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            if isinstance(spec, tuple) and len(spec) >= 2:
                _check_targets(spec[1], self.tasks, argument)
        elif y is not None:
            _check_targets(y, self.tasks, argument)

    # ---------------------------------------------------------- serialization
    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "strategy": keras.saving.serialize_keras_object(self.strategy),
            "shared_layers": self.shared_layers,
            "log_conflict": self.log_conflict,
            "skip_nonfinite": self.skip_nonfinite,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("gradnorm_layer", None)  # saved by mtlbook < 0.2
        config["network"] = keras.saving.deserialize_keras_object(
            config["network"])
        config["strategy"] = keras.saving.deserialize_keras_object(
            config["strategy"])
        return cls(**config)


def _flat_layers(model):
    layers = []
    for layer in model.layers:
        if getattr(layer, "layers", None):
            layers.extend(_flat_layers(layer))
        layers.append(layer)
    return layers


class TaskWeightHistory(keras.callbacks.Callback):
    """Records every task's weight after each training step.

    Attributes:
        weights: list of `(T,)` arrays, one per step.

    Example:

    ```python
    recorder = TaskWeightHistory()
    model.fit(..., callbacks=[recorder])
    plot_task_weights(np.array(recorder.weights), model.tasks)
    ```
    """

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_begin(self, logs=None):
        strategy = getattr(self.model, "strategy", None)
        if not callable(getattr(strategy, "task_weights", None)):
            raise ValueError(
                "TaskWeightHistory needs a model with a mtlbook.weighting "
                "strategy (`model.strategy`), such as a MultiTaskModel. "
                f"Received: a {type(self.model).__name__} without one"
            )

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(
            np.asarray(ops.convert_to_numpy(self.model.strategy.task_weights()))
        )


class GradientConflictHistory(keras.callbacks.Callback):
    """Records the per-step mean pairwise gradient cosine.

    Needs a `MultiTaskModel(..., log_conflict=True)`.

    Attributes:
        cosines: list of floats, one per training step.
    """

    def __init__(self):
        super().__init__()
        self.cosines = []

    def on_train_begin(self, logs=None):
        if not getattr(self.model, "log_conflict", False):
            raise ValueError(
                "GradientConflictHistory needs a MultiTaskModel built with "
                "log_conflict=True. Received: "
                f"log_conflict={getattr(self.model, 'log_conflict', None)}"
            )

    def on_train_batch_end(self, batch, logs=None):
        self.cosines.append(float(self.model.last_gradient_cosine.numpy()))
