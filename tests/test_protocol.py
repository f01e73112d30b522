"""The strategy protocol (mtlbook.weighting.base) driven three ways.

Every strategy is trained by `MultiTaskModel.fit`, by a plain `keras.Model`
subclass that overrides `compute_loss` (strategies that need only the
losses) and by a hand-written `tf.GradientTape` loop built from the public
helpers; on the same data, seed and batches the three must end with the
same weights. The loop and the subclass are the ones of the
loss_weighting chapter.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from mtlbook.training import MultiTaskModel, task_gradient_matrix
from test_training import make_data  # the same two-task data
from mtlbook.weighting import (
    CAGrad, FAMO, IMTLG, MGDA, AlignedMTL, NashMTL, RandomLossWeighting,
    DynamicWeightAverage, EqualWeighting, GradNorm, PCGrad,
    StaticWeighting, Strategy, UncertaintyWeighting, UpdateEpoch,
    flatten_gradients, unflatten_gradients,
)

TASKS = ["a", "b"]
FACTORIES = {
    "equal": EqualWeighting,
    "static": lambda: StaticWeighting({"b": 0.5, "a": 1.0}),
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gradnorm": lambda: GradNorm(alpha=1.0, layer="trunk"),
    "pcgrad": lambda: PCGrad(seed=1),
    "mgda": MGDA,
    "cagrad": CAGrad,
    "imtl": IMTLG,
    "nash_mtl": lambda: NashMTL(update_weights_every=2),
    "aligned": AlignedMTL,
    "rlw": lambda: RandomLossWeighting(seed=3),
    "famo": lambda: FAMO(learning_rate=0.1),
}
EPOCHS, BATCH = 3, 16


def layers(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    trunk = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {"a": keras.layers.Dense(2, name="a")(trunk),
               "b": keras.layers.Dense(1, name="b")(trunk)}
    return inputs, outputs


def losses():
    return {"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "b": keras.losses.MeanSquaredError()}


class WeightedLossModel(keras.Model):
    """Wraps a network; its loss is a strategy's total of the task losses.

    (A subclass of the wrapper, not of a functional model: Keras 3.13 does
    not track a layer set on a functional model after `__init__`, so the
    strategy's own variables, e.g. uncertainty's, would not be trained.)
    """

    def __init__(self, network, strategy, task_losses, **kwargs):
        super().__init__(**kwargs)
        if strategy.requires_task_gradients or (
            strategy.requires_gradient_norms
        ):
            raise ValueError(
                "compute_loss sees losses only; this strategy needs "
                f"gradients. Received: strategy={type(strategy).__name__}"
            )
        strategy.set_tasks(list(network.output))
        self.network = network
        self.strategy = strategy
        self.task_losses = task_losses

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        losses = ops.stack([self.task_losses[t](y[t], y_pred[t])
                            for t in self.strategy.task_names])
        # the protocol's order: the total with this step's weights, then
        # update_step (RLW and FAMO move their state there)
        total = self.strategy.combine_losses(losses)
        if training:
            self.strategy.update_step(losses)
        return total + sum(self.losses) if self.losses else total


def tape_loop(network, strategy, x, y, epochs, batch, learning_rate):
    """Trains `network` with `strategy` in a hand-written loop."""
    tasks = list(network.output)
    strategy.set_tasks(tasks)
    task_losses = losses()
    optimizer = keras.optimizers.SGD(learning_rate)
    shared = network.get_layer("trunk").trainable_variables
    heads = {t: network.get_layer(t).trainable_variables for t in tasks}
    norm_layer = strategy.gradient_norm_layer or "trunk"
    norm_variables = network.get_layer(norm_layer).trainable_variables

    @tf.function
    def step(xb, yb):
        with tf.GradientTape(persistent=True) as tape:
            predictions = network(xb, training=True)
            task_loss = [task_losses[t](yb[t], predictions[t]) for t in tasks]
            total = strategy.combine_losses(ops.stack(task_loss))
        if strategy.requires_task_gradients:
            matrix = task_gradient_matrix(tape, task_loss, shared)
            update = strategy.combine_gradients(matrix, optimizer.iterations)
            pairs = list(zip(unflatten_gradients(update, shared), shared))
            for loss, t in zip(task_loss, tasks):
                pairs += zip(tape.gradient(loss, heads[t]), heads[t])
        else:
            variables = (network.trainable_variables
                         + strategy.trainable_variables)
            pairs = zip(tape.gradient(total, variables), variables)
        norms = None
        if strategy.requires_gradient_norms:
            rows = task_gradient_matrix(tape, task_loss, norm_variables)
            norms = ops.sqrt(ops.sum(rows * rows, axis=1))
        del tape
        optimizer.apply_gradients(pairs)
        strategy.update_step(ops.stack(task_loss), norms)

    for _ in range(epochs):
        for start in range(0, len(x), batch):
            step(x[start:start + batch],
                 {t: v[start:start + batch] for t, v in y.items()})
        strategy.update_epoch()


def weights_of(model, strategy):
    """`{path: value}` of the network's variables and the task weights."""
    own = {id(v) for v in strategy.variables}
    values = {v.path: np.array(v) for v in model.trainable_variables
              if id(v) not in own}
    values["task_weights"] = np.array(strategy.task_weights())
    return values


def run_fit(name):
    x, y = make_data()
    strategy = FACTORIES[name]()
    model = MultiTaskModel(*layers(), strategy=strategy)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=losses())
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False,
              verbose=0)
    return weights_of(model.network, strategy)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_fit_and_tape_loop_agree(name):
    expected = run_fit(name)
    x, y = make_data()
    network = keras.Model(*layers())
    strategy = FACTORIES[name]()
    tape_loop(network, strategy, x, y, EPOCHS, BATCH, 0.05)
    got = weights_of(network, strategy)
    assert sorted(got) == sorted(expected)
    for path, want in expected.items():
        np.testing.assert_allclose(got[path], want, rtol=1e-4, atol=1e-5,
                                   err_msg=path)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_compute_loss_override_agrees_or_refuses(name):
    strategy = FACTORIES[name]()
    if strategy.requires_task_gradients or strategy.requires_gradient_norms:
        with pytest.raises(ValueError, match="needs gradients"):
            WeightedLossModel(keras.Model(*layers()), strategy, losses())
        return
    expected = run_fit(name)
    x, y = make_data()
    model = WeightedLossModel(keras.Model(*layers()), strategy, losses())
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS,
                        shuffle=False, verbose=0,
                        callbacks=[UpdateEpoch(strategy)]).history
    assert len(history["a_weight"]) == EPOCHS  # logged by UpdateEpoch
    got = weights_of(model, strategy)
    assert sorted(got) == sorted(expected)
    for path, want in expected.items():
        np.testing.assert_allclose(got[path], want, rtol=1e-4, atol=1e-5,
                                   err_msg=path)


def test_dwa_updates_under_train_on_batch_when_told():
    x, y = make_data()
    strategy = DynamicWeightAverage()
    model = MultiTaskModel(*layers(), strategy=strategy)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=losses())
    for _ in range(3):
        for start in range(0, len(x), BATCH):
            model.train_on_batch(
                x[start:start + BATCH],
                {t: v[start:start + BATCH] for t, v in y.items()})
        model.strategy.update_epoch()
    assert float(strategy.epochs_seen.numpy()) == 3.0
    assert not np.allclose(np.array(strategy.task_weights()), 1.0)


def test_fit_takes_callbacks_positionally():
    x, y = make_data()
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(epoch))
    model = MultiTaskModel(*layers(), strategy=DynamicWeightAverage())
    model.compile(optimizer="sgd", loss=losses())
    # fit(x, y, batch_size, epochs, verbose, callbacks)
    model.fit(x, y, 16, 2, 0, [callback])
    assert seen == [0, 1]
    assert float(model.strategy.epochs_seen.numpy()) == 2.0


def test_focal_loss_gets_keras_accuracy():
    # Keras picks the accuracy from the shapes, not from the loss's class
    x, y = make_data()
    y = {"a": y["a"][:, None].astype("float32"), "b": y["b"]}
    inputs = keras.Input((6,))
    trunk = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {"a": keras.layers.Dense(1, activation="sigmoid", name="a")(
        trunk), "b": keras.layers.Dense(1, name="b")(trunk)}
    model = MultiTaskModel(inputs, outputs)
    model.compile(optimizer="sgd",
                  loss={"a": keras.losses.BinaryFocalCrossentropy(),
                        "b": "mse"},
                  metrics={"a": ["accuracy"]})
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    predicted = (model.predict(x, verbose=0)["a"] > 0.5).astype("float32")
    np.testing.assert_allclose(logs["a_accuracy"], np.mean(predicted == y["a"]),
                               rtol=1e-6)


def test_gradient_helpers_round_trip_and_errors():
    variables = [keras.Variable(np.zeros((2, 3), "float32")),
                 keras.Variable(np.zeros((4,), "float32"))]
    vector = ops.arange(10, dtype="float32")
    pieces = unflatten_gradients(vector, variables)
    assert [tuple(p.shape) for p in pieces] == [(2, 3), (4,)]
    np.testing.assert_array_equal(
        np.array(flatten_gradients(pieces, variables)), np.arange(10))
    np.testing.assert_array_equal(
        np.array(flatten_gradients([None, pieces[1]], variables))[:6], 0.0)
    with pytest.raises(ValueError, match="10 entries"):
        unflatten_gradients(ops.ones((9,)), variables)
    with pytest.raises(ValueError, match="same length"):
        flatten_gradients([None], variables)
    with pytest.raises(ValueError, match="variables"):
        task_gradient_matrix(None, [1.0], [])


def test_set_tasks_errors():
    strategy = EqualWeighting()
    with pytest.raises(ValueError, match="task_names"):
        strategy.set_tasks("ab")
    with pytest.raises(ValueError, match="task_names"):
        strategy.set_tasks(["a", "a"])
    strategy.set_tasks(["a", "b"])
    with pytest.raises(ValueError, match="already used"):
        strategy.set_tasks(["b", "a"])
    with pytest.raises(ValueError, match="gradient_norms"):
        GradNorm().update_step([1.0, 1.0])
    with pytest.raises(TypeError, match="layer"):
        GradNorm(layer=3)
    with pytest.raises(TypeError, match="strategy"):
        UpdateEpoch("dwa")


def test_a_new_strategy_needs_no_change_to_the_model():
    class Inverse(Strategy):
        """Weights each task by 1 / (its first loss): a toy strategy."""

        def build(self, input_shape):
            super().build(input_shape)
            self.first = self.add_weight(
                name="first", shape=input_shape, initializer="zeros",
                trainable=False)

        def task_weights(self):
            first = ops.convert_to_tensor(self.first)
            return ops.where(first > 0, 1.0 / first, 1.0)

        def update_step(self, task_losses, gradient_norms=None):
            first = ops.convert_to_tensor(self.first)
            self.first.assign(ops.where(first > 0, first, task_losses))

    x, y = make_data()
    model = MultiTaskModel(*layers(), strategy=Inverse())
    model.compile(optimizer="sgd", loss=losses())
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    first = np.array(model.strategy.first)
    assert np.all(first > 0)
    np.testing.assert_allclose(
        [history["a_weight"][-1], history["b_weight"][-1]], 1.0 / first,
        rtol=1e-5)


def test_non_tensorflow_backend_is_refused(monkeypatch):
    # what MultiTaskModel reads; importing another backend is not needed
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="TensorFlow backend"):
        MultiTaskModel(inputs, {"a": keras.layers.Dense(1)(inputs)})


def test_single_task_metrics_keep_the_task_prefix():
    x, y = make_data()
    inputs = keras.Input((6,))
    outputs = {"a": keras.layers.Dense(2, name="a")(inputs)}
    model = MultiTaskModel(inputs, outputs)
    model.compile(optimizer="sgd", loss={"a": losses()["a"]},
                  metrics={"a": ["accuracy"]})
    history = model.fit(x, {"a": y["a"]}, epochs=1, verbose=0,
                        validation_data=(x, {"a": y["a"]})).history
    assert {"loss", "a_loss", "a_accuracy", "a_weight", "val_a_accuracy",
            "val_a_loss"} <= set(history)
    result = model.evaluate(x, {"a": y["a"]}, verbose=0, return_dict=True)
    assert "a_accuracy" in result and "a_weight" not in result
