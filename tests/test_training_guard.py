"""Tests of `MultiTaskModel(skip_nonfinite=True)`, the non-finite step guard.

A batch with a NaN or infinite input or label in the middle of training
must change nothing (weights, optimizer slots and iterations, strategy
state) and be counted in `skipped_steps`; training then goes on. With
the guard off, nothing changes from plain Keras (the bad update is
applied); on finite data the guard gives the same weights.
"""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from mtlbook.training import MultiTaskModel
from mtlbook.weighting import (
    MGDA, DynamicWeightAverage, EqualWeighting, GradNorm, PCGrad,
    UncertaintyWeighting,
)
from test_training import make_data, make_model

BATCH, POISONED = 16, 2  # 4 batches of 16; the third one is bad
FACTORIES = [EqualWeighting, UncertaintyWeighting, DynamicWeightAverage,
             GradNorm, PCGrad, MGDA]


def state(model):
    """Copies of every weight, strategy variable and optimizer variable."""
    return [v.numpy().copy()
            for v in model.weights + model.optimizer.variables]


class RecordState(keras.callbacks.Callback):
    """The model's full state after every training step."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(state(self.model))


def poisoned_data(where):
    x, y = make_data()
    start = POISONED * BATCH
    if where == "input":
        x[start + 3, 1] = np.nan
    else:
        y["b"][start + 5, 0] = np.inf
    return x, y


def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("where", ["input", "label"])
@pytest.mark.parametrize("factory", FACTORIES)
def test_nonfinite_step_changes_nothing_and_training_goes_on(factory, where):
    x, y = poisoned_data(where)
    model = make_model(factory(), optimizer="adam", skip_nonfinite=True)
    recorder = RecordState()
    history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0,
                        shuffle=False, callbacks=[recorder]).history
    steps = recorder.steps
    assert len(steps) == 8
    for bad in (POISONED, POISONED + 4):  # once per epoch
        assert same(steps[bad], steps[bad - 1]), "the bad step changed state"
        assert not same(steps[bad + 1], steps[bad]), "training stopped"
    for values in steps:
        assert all(np.all(np.isfinite(v)) for v in values)
    assert model.optimizer.iterations.numpy() == 6
    assert history["skipped_steps"] == [1.0, 1.0]
    for key in ("loss", "a_loss", "b_loss", "b_mae", "a_weight"):
        assert np.all(np.isfinite(history[key])), key


def test_strategy_state_is_kept():
    # DWA's running sums, GradNorm's initial losses and uncertainty's
    # log-variances, read by name before and after the bad step
    x, y = poisoned_data("label")
    for strategy, names in [
        (DynamicWeightAverage(), ("loss_sum", "steps_seen")),
        (GradNorm(), ("loss_weights", "initial_losses")),
        (UncertaintyWeighting(), ("log_variance",)),
    ]:
        model = make_model(strategy, optimizer="adam", skip_nonfinite=True)
        model.fit(x[:POISONED * BATCH], {t: v[:POISONED * BATCH]
                                         for t, v in y.items()},
                  batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
        before = {n: getattr(strategy, n).numpy().copy() for n in names}
        bad = slice(POISONED * BATCH, (POISONED + 1) * BATCH)
        logs = model.train_on_batch(x[bad], {t: v[bad] for t, v in y.items()},
                                    return_dict=True)
        assert logs["skipped_steps"] == 1.0
        for name in names:
            np.testing.assert_array_equal(getattr(strategy, name).numpy(),
                                          before[name], err_msg=name)


def test_gradnorm_first_step_nonfinite_keeps_it_uninitialized():
    x, y = poisoned_data("input")
    bad = slice(POISONED * BATCH, (POISONED + 1) * BATCH)
    model = make_model(GradNorm(), skip_nonfinite=True)
    model.train_on_batch(x[bad], {t: v[bad] for t, v in y.items()})
    assert model.strategy.initialized.numpy() == 0.0
    np.testing.assert_array_equal(model.strategy.initial_losses.numpy(), 1.0)


@pytest.mark.parametrize("factory", [UncertaintyWeighting,
                                     DynamicWeightAverage, GradNorm, PCGrad])
def test_guard_gives_the_same_weights_on_finite_data(factory):
    x, y = make_data()
    trained = []
    for guard in (False, True):
        model = make_model(factory(), optimizer="adam", skip_nonfinite=guard)
        history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0,
                            shuffle=False).history
        trained.append(state(model))
        assert ("skipped_steps" in history) == guard
    assert same(*trained)
    assert history["skipped_steps"] == [0.0, 0.0]


def test_guard_off_applies_the_bad_step_as_keras_does():
    x, y = poisoned_data("input")
    model = make_model(EqualWeighting(), optimizer="adam")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    assert not np.all(np.isfinite(model.network.weights[0].numpy()))
    plain = make_model(EqualWeighting(), optimizer="adam")
    network = plain.network
    reference = keras.Model(network.inputs, network.outputs)
    reference.compile(optimizer="adam", loss={
        "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "b": "mse"})
    reference.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                  shuffle=False)
    assert not np.all(np.isfinite(reference.weights[0].numpy()))


def test_terminate_on_nan_is_not_needed_with_the_guard():
    x, y = poisoned_data("input")
    model = make_model(EqualWeighting(), skip_nonfinite=True)
    history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0,
                        shuffle=False,
                        callbacks=[keras.callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 2
    assert model.evaluate(x[:BATCH], {t: v[:BATCH] for t, v in y.items()},
                          verbose=0, return_dict=True).keys().isdisjoint(
                              {"skipped_steps"})


def test_guard_runs_eagerly_and_under_xla():
    x, y = poisoned_data("label")
    for options in ({"run_eagerly": True}, {"jit_compile": True}):
        keras.utils.set_random_seed(0)
        model = make_model(PCGrad(), skip_nonfinite=True)
        model.compile(optimizer="sgd", loss={
            "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "b": "mse"}, **options)
        recorder = RecordState()
        history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                            shuffle=False, callbacks=[recorder]).history
        assert history["skipped_steps"] == [1.0], options
        assert same(recorder.steps[POISONED], recorder.steps[POISONED - 1])


def test_loss_scale_optimizer_keeps_its_scale_on_a_nan_batch():
    x, y = poisoned_data("input")
    bad = slice(POISONED * BATCH, (POISONED + 1) * BATCH)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.05), initial_scale=256.0)
        model = make_model(GradNorm(), optimizer=optimizer,
                           skip_nonfinite=True)
        model.fit(x[:BATCH], {t: v[:BATCH] for t, v in y.items()},
                  batch_size=BATCH, epochs=1, verbose=0)
        before = state(model)
        logs = model.train_on_batch(x[bad], {t: v[bad] for t, v in y.items()},
                                    return_dict=True)
        assert logs["skipped_steps"] == 1.0
        assert same(state(model), before)
        history = model.fit(x[:BATCH], {t: v[:BATCH] for t, v in y.items()},
                            batch_size=BATCH, epochs=1, verbose=0).history
        assert history["skipped_steps"] == [0.0]
        assert not same(state(model), before)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_skip_nonfinite_is_saved(tmp_path):
    x, y = make_data()
    model = make_model(DynamicWeightAverage(), skip_nonfinite=True)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert model.get_config()["skip_nonfinite"] is True
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.skip_nonfinite is True
    x_bad, y_bad = poisoned_data("label")
    history = restored.fit(x_bad, y_bad, batch_size=BATCH, epochs=1,
                           verbose=0, shuffle=False).history
    assert history["skipped_steps"] == [1.0]
    assert make_model().get_config()["skip_nonfinite"] is False
    config = make_model().get_config()
    del config["skip_nonfinite"]  # saved before the guard existed
    assert MultiTaskModel.from_config(config).skip_nonfinite is False


@pytest.mark.parametrize("value", ["yes", 1, None, np.float32(1.0)])
def test_skip_nonfinite_must_be_a_bool(value):
    with pytest.raises(TypeError, match="`skip_nonfinite` must be a bool"):
        make_model(skip_nonfinite=value)


MIRRORED = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mtlbook.training import MultiTaskModel

    x = np.ones((8, 3), "float32")
    with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
        inputs = keras.Input((3,))
        trunk = keras.layers.Dense(2)(inputs)
        model = MultiTaskModel(inputs, {"a": keras.layers.Dense(1)(trunk),
                                        "b": keras.layers.Dense(1)(trunk)},
                               skip_nonfinite=True)
        model.compile("sgd", loss={"a": "mse", "b": "mse"})
    try:
        model.fit(x, {"a": x[:, :1], "b": x[:, :1]}, verbose=0)
    except ValueError as error:
        print("RAISED", error)
""")


def test_guard_refuses_several_replicas_clearly():
    result = subprocess.run([sys.executable, "-c", MIRRORED],
                            capture_output=True, text=True, timeout=300)
    assert "RAISED `skip_nonfinite=True` is not supported" in result.stdout, (
        result.stdout + result.stderr)
    assert "Received: 2 replicas" in result.stdout
