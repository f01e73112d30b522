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


def _task_loss(identifier):
    """Resolves one task's loss as `compile` does (`keras.losses.get`)."""
    loss = keras.losses.get(identifier)
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
    if not variables:
        raise ValueError(
            "`variables` must be a non-empty list of variables. "
            f"Received: variables={variables!r}"
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
    """
    gradients = ops.convert_to_tensor(task_gradients, "float32")
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
        **kwargs: Base model arguments (`name`, ...).

    Reference:
        Ruder, 2017, "An Overview of Multi-Task Learning in Deep Neural
        Networks".
    """

    def __init__(
        self, inputs=None, outputs=None, strategy=None, shared_layers=None,
        log_conflict=False, network=None, **kwargs,
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
        super().__init__(**kwargs)
        if network is None:
            if not isinstance(outputs, dict) or not outputs:
                raise TypeError(
                    "`outputs` must be a non-empty dict {task: tensor}. "
                    f"Received: outputs={type(outputs).__name__}"
                )
            network = keras.Model(inputs, outputs, name="network")
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
        self.log_conflict = bool(log_conflict)
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
        return found

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
        self.task_losses = {t: _task_loss(loss[t]) for t in self.tasks}
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
                `{task: array}`.

        Returns:
            `(T,)` float32 tensor, in the order of `model.tasks`.
        """
        unknown = (sorted(set(y) - set(self.tasks))
                   if isinstance(y, dict) else [])
        if not isinstance(y, dict) or unknown:
            raise ValueError(
                f"`y` must be a dict keyed by task name {self.tasks}. "
                f"Received: keys={sorted(y) if isinstance(y, dict) else y}"
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
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None])
        if self._step_hook or strategy.requires_gradient_norms:
            strategy.update_step(global_losses, norms)
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
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        if len(self.tasks) > 1:
            return logs
        ours = {"loss", "gradient_cosine", f"{self.tasks[0]}_loss"}
        return {k if k in ours else f"{self.tasks[0]}_{k}": v
                for k, v in logs.items()}

    def test_step(self, data):
        logs = super().test_step(data)
        return {k: v for k, v in logs.items() if k != "gradient_cosine"}

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, plus the strategy's per-epoch hook.

        Adds `UpdateEpoch(self.strategy)` first in the callbacks: it logs
        each task's weight at the end of the epoch (`<task>_weight`, in
        the history; no cost per step), then runs `update_epoch`, so later
        callbacks see the next epoch's weights. Takes the same arguments
        as `keras.Model.fit`, positional or by keyword.
        """
        if self.optimizer is not None and not self.optimizer.built:
            # a LossScaleOptimizer's scale exists once built (tape step)
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        arguments = dict(bound.arguments)
        arguments.pop("self")
        extra = arguments.pop("kwargs", {})
        callbacks = list(arguments.get("callbacks") or [])
        arguments["callbacks"] = [UpdateEpoch(self.strategy), *callbacks]
        return super().fit(**arguments, **extra)

    # ---------------------------------------------------------- serialization
    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "strategy": keras.saving.serialize_keras_object(self.strategy),
            "shared_layers": self.shared_layers,
            "log_conflict": self.log_conflict,
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
