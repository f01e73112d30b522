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

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mtlbook.weighting import EqualWeighting, GradNorm, StaticWeighting
from mtlbook.weighting.base import GradientMethod, LossWeighting


@keras.saving.register_keras_serializable(package="mtlbook")
class LastValue(keras.metrics.Metric):
    """Metric whose result is the last value it was given (e.g. a weight)."""

    def __init__(self, name="last_value", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(
            shape=(), initializer="zeros", name="value", aggregation="mean"
        )

    def update_state(self, value):
        self.value.assign(ops.cast(value, self.dtype))

    def result(self):
        return ops.multiply(self.value, 1.0)  # a copy, not a live view

    def reset_state(self):
        self.value.assign(0.0)


class _FunctionLoss(keras.losses.Loss):
    """Wraps a per-sample loss function into a `keras.losses.Loss`."""

    def __init__(self, function, name=None):
        super().__init__(name=name or getattr(function, "__name__", "loss"))
        self.function = function

    def call(self, y_true, y_pred):
        return self.function(y_true, y_pred)


def _resolve_loss(loss):
    if isinstance(loss, keras.losses.Loss):
        return loss
    if isinstance(loss, str):
        resolved = keras.losses.get(loss)
        if isinstance(resolved, keras.losses.Loss):
            return resolved
        return _FunctionLoss(resolved, name=loss)
    if callable(loss):
        return _FunctionLoss(loss)
    raise TypeError(
        "Each loss must be a keras.losses.Loss, a loss name or a function. "
        f"Received: loss={loss!r}"
    )


_ACCURACY = {
    "SparseCategoricalCrossentropy": keras.metrics.SparseCategoricalAccuracy,
    "sparse_categorical_crossentropy": keras.metrics.SparseCategoricalAccuracy,
    "BinaryCrossentropy": keras.metrics.BinaryAccuracy,
    "binary_crossentropy": keras.metrics.BinaryAccuracy,
    "CategoricalCrossentropy": keras.metrics.CategoricalAccuracy,
    "categorical_crossentropy": keras.metrics.CategoricalAccuracy,
}


def _resolve_metric(metric, task, loss):
    if isinstance(metric, str):
        if metric in ("accuracy", "acc"):
            key = type(loss).__name__
            if isinstance(loss, _FunctionLoss):
                key = getattr(loss.function, "__name__", "")
            metric_class = _ACCURACY.get(key, keras.metrics.Accuracy)
            return metric_class(name=f"{task}_accuracy")
        resolved = keras.metrics.get(metric)
        if isinstance(resolved, keras.metrics.Metric):
            config = resolved.get_config()
            config["name"] = f"{task}_{metric}"
            return type(resolved).from_config(config)
        return keras.metrics.MeanMetricWrapper(
            resolved, name=f"{task}_{metric}"
        )
    if isinstance(metric, keras.metrics.Metric):
        config = metric.get_config()
        config["name"] = f"{task}_{config['name']}"
        return type(metric).from_config(config)
    if callable(metric):
        name = getattr(metric, "__name__", "metric")
        return keras.metrics.MeanMetricWrapper(metric, name=f"{task}_{name}")
    raise TypeError(
        "Each metric must be a keras.metrics.Metric, a name or a function. "
        f"Received: metric={metric!r}"
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


def _cross_replica_sum(value):
    """Sums one tensor over the replicas of a distributed run."""
    if tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, value
    )


def _flatten(gradients, variables):
    return ops.concatenate([
        ops.reshape(
            ops.zeros(v.shape, "float32") if g is None
            else ops.cast(g, "float32"),
            (-1,),
        )
        for g, v in zip(gradients, variables)
    ])


def _unflatten(vector, variables):
    pieces, start = [], 0
    for variable in variables:
        size = int(np.prod(variable.shape))
        pieces.append(ops.reshape(vector[start:start + size], variable.shape))
        start += size
    return pieces


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


@keras.saving.register_keras_serializable(package="mtlbook")
class MultiTaskModel(keras.Model):
    """A multi-output Keras model trained with a multi-task strategy.

    Built like a functional model from inputs and a dict
    `{task: output tensor}` (or from an existing functional `network` with
    dict outputs). Every trainable variable of the network is sorted once,
    by which task outputs depend on it: a variable reached by one task
    only belongs to that task, one reached by several tasks is shared
    (`shared_layers` overrides the shared set). In `train_step`:

    - a `LossWeighting` strategy turns the `T` task losses into one loss,
      differentiated once w.r.t. all variables; `GradNorm` then updates
      its weights from the task gradient norms on the last shared layer;
    - a `GradientMethod` gets the `(T, D)` per-task gradients of the shared
      variables and returns their update; task-specific variables get
      their own task's gradient, never projected.

    Under `tf.distribute`, per-task gradients are summed over replicas
    before a gradient method sees them; under `mixed_float16` they are
    unscaled before and rescaled after, so the `LossScaleOptimizer` still
    skips steps with non-finite gradients.

    Args:
        inputs: Keras input tensor(s) (functional construction).
        outputs: dict `{task: output tensor}`.
        strategy: a `mtlbook.weighting` strategy; default `EqualWeighting()`.
        shared_layers: optional list of layer names whose variables are the
            shared parameters. Other variables reached by several tasks
            then get the plain sum of those tasks' gradients.
        gradnorm_layer: optional name of the layer whose variables GradNorm
            measures; default the last layer with shared variables.
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
        gradnorm_layer=None, log_conflict=False, network=None, **kwargs,
    ):
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
        if not isinstance(strategy, (LossWeighting, GradientMethod)):
            raise TypeError(
                "`strategy` must be a mtlbook.weighting strategy. "
                f"Received: strategy={strategy!r}"
            )
        if isinstance(strategy, StaticWeighting):
            strategy.order_for(self.tasks)
        strategy.check_num_tasks(len(self.tasks))
        if not strategy.built:
            strategy.build((len(self.tasks),))
        self.strategy = strategy
        self.log_conflict = bool(log_conflict)
        self.shared_layers = (
            None if shared_layers is None else list(shared_layers)
        )
        self.gradnorm_layer = gradnorm_layer
        self._split_variables()
        needs_shared = strategy.is_gradient_method or self.log_conflict
        if needs_shared and not self.shared_variables:
            raise ValueError(
                f"`strategy` {type(strategy).__name__} (or log_conflict) "
                "needs shared variables, but no trainable variable is "
                "reached by two or more tasks. Received: "
                f"shared_layers={self.shared_layers}"
            )
        if self.log_conflict:
            self.last_gradient_cosine = self.add_weight(
                name="last_gradient_cosine", shape=(), initializer="zeros",
                trainable=False, aggregation="only_first_replica",
            )
        self.built = True

    # ----------------------------------------------------------- structure
    def _split_variables(self):
        strategy = tf.distribute.get_strategy()
        found = []
        distributed = tf.distribute.has_strategy()
        if distributed and tf.distribute.in_cross_replica_context():
            # Mirrored variables are only differentiable in a replica context.
            strategy.run(lambda: found.append(self._variable_owners()))
        else:
            found.append(self._variable_owners())
        owners = found[0]
        variables = self.network.trainable_variables
        self._assign_variables(variables, owners)

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

    def _assign_variables(self, variables, owners):
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
        self._owners = owners
        self._gradnorm_variables = []
        if isinstance(self.strategy, GradNorm):
            if self.gradnorm_layer is not None:
                layer_vars = self.network.get_layer(
                    self.gradnorm_layer).trainable_variables
            else:
                layer_vars = []
                for layer in reversed(_flat_layers(self.network)):
                    found = [v for v in layer.trainable_variables
                             if id(v) in shared_ids]
                    if found and not getattr(layer, "layers", None):
                        layer_vars = found
                        break
            if not layer_vars:
                raise ValueError(
                    "GradNorm needs a shared layer with trainable variables; "
                    "none was found. Received: "
                    f"gradnorm_layer={self.gradnorm_layer!r}"
                )
            self._gradnorm_variables = layer_vars

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    # ------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training, with one loss (and metrics) per task.

        Args:
            optimizer: optimizer name or instance.
            loss: dict `{task: loss}` naming every task exactly.
            metrics: optional dict `{task: [metric, ...]}` over task names.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, `run_eagerly`, ...).
        """
        _check_task_keys("loss", loss, self.tasks, require_all=True)
        metrics = {} if metrics is None else metrics
        _check_task_keys("metrics", metrics, self.tasks, require_all=False)
        for forbidden in ("loss_weights", "weighted_metrics"):
            if kwargs.get(forbidden) is not None:
                raise ValueError(
                    f"`{forbidden}` is not supported by MultiTaskModel; use "
                    f"a strategy such as StaticWeighting. Received: "
                    f"{forbidden}={kwargs[forbidden]!r}"
                )
        super().compile(optimizer=optimizer, **kwargs)
        self._loss_spec = dict(loss)
        self._metric_spec = {t: list(m) if isinstance(m, (list, tuple))
                             else [m] for t, m in metrics.items()}
        self._kwargs_spec = dict(kwargs)
        self.task_losses = {t: _resolve_loss(loss[t]) for t in self.tasks}
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.loss_trackers = {
            t: keras.metrics.Mean(name=f"{t}_loss") for t in self.tasks
        }
        self.task_metrics = {
            t: [_resolve_metric(m, t, self.task_losses[t])
                for m in self._metric_spec.get(t, [])]
            for t in self.tasks
        }
        self.weight_trackers = {
            t: LastValue(name=f"{t}_weight") for t in self.tasks
        }
        self.conflict_tracker = (
            keras.metrics.Mean(name="gradient_cosine")
            if self.log_conflict else None
        )

    @property
    def metrics(self):
        if not getattr(self, "compiled", False) or not hasattr(
            self, "total_tracker"
        ):
            return []
        result = [self.total_tracker, *self.loss_trackers.values()]
        for task in self.tasks:
            result.extend(self.task_metrics[task])
        result.extend(self.weight_trackers.values())
        if self.conflict_tracker is not None:
            result.append(self.conflict_tracker)
        return result

    def get_compile_config(self):
        if not getattr(self, "compiled", False):
            return {}
        optimizer = self.optimizer
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = optimizer.inner_optimizer
        serialize = keras.saving.serialize_keras_object
        return {
            "optimizer": serialize(optimizer),
            "loss": {t: serialize(v) for t, v in self._loss_spec.items()},
            "metrics": {t: [serialize(m) for m in ms]
                        for t, ms in self._metric_spec.items()},
            "kwargs": dict(self._kwargs_spec),
        }

    def compile_from_config(self, config):
        if not config:
            return
        deserialize = keras.saving.deserialize_keras_object
        self.compile(
            optimizer=deserialize(config["optimizer"]),
            loss={t: deserialize(v) for t, v in config["loss"].items()},
            metrics={t: [deserialize(m) for m in ms]
                     for t, ms in config["metrics"].items()},
            **config.get("kwargs", {}),
        )
        self.optimizer.build(self.trainable_variables)

    # ---------------------------------------------------------------- steps
    def _local_losses(self, y, y_pred, sample_weight):
        """`(T,)` per-replica mean task losses (not divided by replicas)."""
        unknown = (sorted(set(y) - set(self.tasks))
                   if isinstance(y, dict) else [])
        if not isinstance(y, dict) or unknown:
            raise ValueError(
                f"`y` must be a dict keyed by task name {self.tasks}. "
                f"Received: keys={sorted(y) if isinstance(y, dict) else y}"
            )
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        losses = []
        for task in self.tasks:
            weight = (sample_weight.get(task) if isinstance(sample_weight, dict)
                      else sample_weight)
            value = self.task_losses[task](y[task], y_pred[task], weight)
            losses.append(ops.cast(value, "float32") * replicas)
        return ops.stack(losses)

    def _update_metrics(self, x, y, y_pred, losses):
        batch = ops.shape(tf.nest.flatten(x)[0])[0]
        for i, task in enumerate(self.tasks):
            self.loss_trackers[task].update_state(
                losses[i], sample_weight=batch
            )
            for metric in self.task_metrics[task]:
                metric.update_state(y[task], y_pred[task])

    def _result(self, metrics):
        return {m.name: m.result() for m in metrics}

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        strategy = self.strategy
        gradient_method = strategy.is_gradient_method
        persistent = (gradient_method or self.log_conflict
                      or isinstance(strategy, GradNorm))
        network_vars = self.network.trainable_variables
        with tf.GradientTape(persistent=persistent) as tape:
            y_pred = self(x, training=True)
            losses = self._local_losses(y, y_pred, sample_weight)
            extra = (ops.sum([ops.cast(v, "float32") for v in self.losses])
                     if self.losses else None)
            # per-task losses as the optimizer sees them: / replicas, scaled
            scaled_task = [self.optimizer.scale_loss(losses[i] / replicas)
                           for i in range(len(self.tasks))]
            if not gradient_method:
                total = strategy(losses)
                objective = total / replicas
                if extra is not None:
                    objective = objective + extra / replicas
                objective = self.optimizer.scale_loss(objective)
            else:
                total = ops.sum(losses)
                if extra is not None:
                    extra_scaled = self.optimizer.scale_loss(extra / replicas)
        shared_matrix, barrier = None, []
        if gradient_method or self.log_conflict:
            shared_matrix = self._task_gradient_matrix(tape, scaled_task)
            barrier.append(shared_matrix)
        if not gradient_method:
            variables = network_vars + strategy.trainable_variables
            gradients = tape.gradient(objective, variables)
            if isinstance(strategy, GradNorm):
                barrier.append(self._gradnorm_step(tape, scaled_task, losses))
        else:
            variables, gradients = self._combined_gradients(
                tape, scaled_task, shared_matrix, replicas
            )
            if extra is not None:
                regular = tape.gradient(extra_scaled, variables)
                gradients = [g if r is None else (r if g is None else g + r)
                             for g, r in zip(gradients, regular)]
        del tape
        if barrier and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            # all replicas must run their collectives in the same order
            with tf.control_dependencies(barrier):
                gradients = [None if g is None else tf.identity(g)
                             for g in gradients]
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        self.optimizer.apply_gradients(pairs)

        self.total_tracker.update_state(
            total, sample_weight=ops.shape(tf.nest.flatten(x)[0])[0]
        )
        self._update_metrics(x, y, y_pred, losses)
        weights = strategy.task_weights()
        for i, task in enumerate(self.tasks):
            self.weight_trackers[task].update_state(weights[i])
        if self.log_conflict:
            cosine = mean_pairwise_cosine(shared_matrix)
            self.conflict_tracker.update_state(cosine)
            self.last_gradient_cosine.assign(cosine)
        return self._result(self.metrics)

    def _loss_scale(self):
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return ops.cast(self.optimizer.dynamic_scale, "float32")
        return None

    def _task_gradient_matrix(self, tape, scaled_task):
        """`(T, D)` unscaled, replica-summed task gradients (shared vars)."""
        rows = [
            _flatten(tape.gradient(loss, self.shared_variables),
                     self.shared_variables)
            for loss in scaled_task
        ]
        matrix = _cross_replica_sum(ops.stack(rows))
        scale = self._loss_scale()
        return matrix if scale is None else matrix / scale

    def _combined_gradients(self, tape, scaled_task, shared_matrix, replicas):
        combined = self.strategy(shared_matrix, step=self.optimizer.iterations)
        scale = self._loss_scale()
        if scale is not None:
            combined = combined * scale
        shared_gradients = _unflatten(combined / replicas,
                                      self.shared_variables)
        variables = list(self.shared_variables)
        gradients = list(shared_gradients)
        shared_ids = {id(v) for v in self.shared_variables}
        for v in self.network.trainable_variables:
            if id(v) in shared_ids or not self._owners[id(v)]:
                continue
            total = None
            for task in self._owners[id(v)]:
                g = tape.gradient(scaled_task[self.tasks.index(task)], v)
                if g is not None:
                    total = g if total is None else total + g
            variables.append(v)
            gradients.append(total)
        return variables, gradients

    def _gradnorm_step(self, tape, scaled_task, losses):
        variables = self._gradnorm_variables
        num_tasks = len(self.tasks)
        rows = ops.stack([_flatten(tape.gradient(loss, variables), variables)
                          for loss in scaled_task])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # one all-reduce for gradients and losses together
        packed = ops.concatenate([ops.reshape(rows, (-1,)), losses / replicas])
        packed = _cross_replica_sum(packed)
        rows = ops.reshape(packed[:-num_tasks], (num_tasks, -1))
        global_losses = packed[-num_tasks:]
        norms = ops.sqrt(ops.sum(rows * rows, axis=1))
        scale = self._loss_scale()
        if scale is not None:
            norms = norms / scale
        return self.strategy.update(global_losses, norms)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        losses = self._local_losses(y, y_pred, sample_weight)
        total = (ops.sum(losses) if self.strategy.is_gradient_method
                 else self.strategy(losses))
        self.total_tracker.update_state(
            total, sample_weight=ops.shape(tf.nest.flatten(x)[0])[0]
        )
        self._update_metrics(x, y, y_pred, losses)
        evaluated = [self.total_tracker, *self.loss_trackers.values()]
        for task in self.tasks:
            evaluated.extend(self.task_metrics[task])
        return self._result(evaluated)

    def fit(self, *args, **kwargs):
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        callbacks = kwargs.pop("callbacks", None)
        callbacks = list(callbacks or [])
        kwargs["callbacks"] = [_StrategyEpochEnd(), *callbacks]
        return super().fit(*args, **kwargs)

    # ---------------------------------------------------------- serialization
    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "strategy": keras.saving.serialize_keras_object(self.strategy),
            "shared_layers": self.shared_layers,
            "gradnorm_layer": self.gradnorm_layer,
            "log_conflict": self.log_conflict,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
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


class _StrategyEpochEnd(keras.callbacks.Callback):
    """Passes each epoch's mean training task losses to the strategy."""

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        if not isinstance(model, MultiTaskModel) or not logs:
            return
        keys = [f"{t}_loss" for t in model.tasks]
        if all(k in logs for k in keys):
            model.strategy.on_epoch_end(
                np.array([float(logs[k]) for k in keys], "float32")
            )


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
