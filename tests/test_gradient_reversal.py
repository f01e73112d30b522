"""Tests of mtlbook.layers.gradient_reversal."""

import math

import keras
import numpy as np
import pytest

from mtlbook.layers.gradient_reversal import (
    DANNSchedule,
    GradientReversal,
    dann_lambda,
)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def gradient(function, x):
    """The gradient of the scalar `function(x)` at `x`, on any backend."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.grad(function)(x)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = function(x)
    return tape.gradient(value, x)


def test_forward_is_identity_and_gradient_is_reversed():
    layer = GradientReversal(0.7)
    x = keras.ops.convert_to_tensor(
        np.random.default_rng(0).normal(size=(4, 3)), "float32")
    np.testing.assert_array_equal(numpy(layer(x)), numpy(x))
    grad = gradient(lambda x: keras.ops.sum(3.0 * layer(x)), x)
    np.testing.assert_allclose(numpy(grad), np.full((4, 3), -0.7 * 3.0))


def test_lambda_is_a_non_trainable_weight_that_can_change():
    layer = GradientReversal(1.0)
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 1
    layer.lambda_.assign(0.25)
    grad = gradient(lambda x: keras.ops.sum(layer(x)), keras.ops.ones((2, 2)))
    np.testing.assert_allclose(numpy(grad), np.full((2, 2), -0.25))


@pytest.mark.parametrize("lambda_", [
    -1.0, -1e-9, "big", None, True, float("nan"), float("inf"), [1.0],
])
def test_bad_lambda_raises(lambda_):
    # A negative lambda would undo the reversal: refused, not flipped.
    with pytest.raises(ValueError, match="`lambda_` must be a finite float"):
        GradientReversal(lambda_)


def test_numpy_lambda_is_accepted_as_a_float():
    layer = GradientReversal(np.float32(0.25))
    assert layer.initial_lambda == 0.25
    assert type(layer.get_config()["lambda_"]) is float


def test_config_round_trip_and_save_load(tmp_path):
    layer = GradientReversal(0.3, name="reversal")
    clone = GradientReversal.from_config(layer.get_config())
    assert clone.initial_lambda == 0.3 and clone.name == "reversal"
    inputs = keras.Input((3,))
    model = keras.Model(
        inputs, keras.layers.Dense(2)(GradientReversal(0.5)(inputs))
    )
    model.get_layer(index=1).lambda_.assign(0.9)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    x = np.ones((2, 3), "float32")
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    restored_lambda = float(restored.get_layer(index=1).lambda_.numpy())
    assert restored_lambda == pytest.approx(0.9)


def test_fit_pushes_features_against_the_head():
    # With lambda = 1 the layer below the reversal moves opposite to the
    # direction that would reduce the loss: the loss must rise.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, name="encoder")(inputs)
    output = keras.layers.Dense(1, trainable=False)(
        GradientReversal(1.0)(hidden)
    )
    model = keras.Model(inputs, output)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.zeros((64, 1), "float32")
    before = model.evaluate(x, y, verbose=0)
    kernel = model.get_layer("encoder").get_weights()[0].copy()
    model.fit(x, y, epochs=3, verbose=0)
    assert not np.allclose(kernel, model.get_layer("encoder").get_weights()[0])
    assert model.evaluate(x, y, verbose=0) > before


def test_dann_lambda_values():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0, maximum=0.5) == pytest.approx(
        0.5 * (2 / (1 + math.exp(-10)) - 1)
    )
    with pytest.raises(ValueError, match="progress"):
        dann_lambda(1.5)
    assert dann_lambda(np.float32(1.0)) == dann_lambda(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"progress": True}, "progress"),
    ({"progress": "0.5"}, "progress"),
    ({"progress": float("nan")}, "progress"),
    ({"progress": -0.1}, "progress"),
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": -10.0}, "gamma"),
    ({"gamma": float("nan")}, "gamma"),
    ({"gamma": float("inf")}, "gamma"),
    ({"gamma": True}, "gamma"),
    ({"maximum": -1.0}, "maximum"),
    ({"maximum": float("nan")}, "maximum"),
    ({"maximum": float("inf")}, "maximum"),
    ({"maximum": None}, "maximum"),
])
def test_dann_lambda_rejects_bad_arguments(kwargs, match):
    # gamma <= 0 or maximum < 0 once gave a negative or zero lambda, NaN a
    # NaN lambda, silently
    with pytest.raises(ValueError, match=f"`{match}` must be a finite float"):
        dann_lambda(**{"progress": 0.5, **kwargs})


def test_schedule_callback_sets_lambda_during_fit():
    inputs = keras.Input((2,))
    reversal = GradientReversal(0.0)
    model = keras.Model(inputs, keras.layers.Dense(1)(reversal(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    schedule = DANNSchedule(reversal, total_steps=4)
    model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=2, epochs=1,
              verbose=0, callbacks=[schedule])
    assert schedule.values == pytest.approx(
        [dann_lambda(p / 4) for p in range(4)]
    )
    assert float(reversal.lambda_.numpy()) == pytest.approx(schedule.values[-1])
    with pytest.raises(TypeError, match="layer"):
        DANNSchedule(keras.layers.Dense(1), total_steps=4)
    with pytest.raises(TypeError, match="layer='reversal'"):
        DANNSchedule("reversal", total_steps=4)
    with pytest.raises(ValueError, match="total_steps"):
        DANNSchedule(reversal, total_steps=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"total_steps": True}, "total_steps"),
    ({"total_steps": 2.5}, "total_steps"),
    ({"total_steps": "10"}, "total_steps"),
    ({"gamma": -1.0}, "gamma"),
    ({"gamma": float("nan")}, "gamma"),
    ({"maximum": -0.5}, "maximum"),
    ({"maximum": float("inf")}, "maximum"),
    ({"maximum": True}, "maximum"),
])
def test_schedule_rejects_bad_arguments_when_made(kwargs, match):
    # before, a bad gamma or maximum surfaced only at the first batch
    arguments = {"layer": GradientReversal(), "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        DANNSchedule(**arguments)


def test_schedule_accepts_numpy_ints():
    schedule = DANNSchedule(GradientReversal(), total_steps=np.int64(10))
    assert schedule.total_steps == 10 and type(schedule.total_steps) is int
