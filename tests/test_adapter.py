"""Tests for mtlbook.layers.Adapter."""

import keras
import numpy as np
import pytest

from mtlbook.layers import Adapter


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_identity_at_initialisation_and_weight_count():
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    layer = Adapter(bottleneck=3)
    np.testing.assert_array_equal(numpy(layer(x)), x)
    # down: 6*3 + 3, up: 3*6 + 6
    assert layer.count_params() == 2 * 6 * 3 + 3 + 6
    assert layer.compute_output_shape((None, 6)) == (None, 6)


def test_value_by_hand():
    layer = Adapter(bottleneck=1, activation="relu")
    layer.build((None, 2))
    layer.down.set_weights([np.array([[1.0], [2.0]]), np.array([-1.0])])
    layer.up.set_weights([np.array([[3.0, -1.0]]), np.array([0.5, 0.0])])
    x = np.array([[1.0, 1.0], [0.0, 0.25]], "float32")
    # hidden = relu(x @ [1, 2] - 1) = [2, 0]; y = x + hidden * [3, -1] + b
    expected = np.array([[1 + 6 + 0.5, 1 - 2], [0 + 0.5, 0.25]])
    np.testing.assert_allclose(numpy(layer(x)), expected, rtol=1e-6)


def test_sequence_inputs_use_the_last_axis():
    out = Adapter(bottleneck=2)(np.ones((2, 5, 4), "float32"))
    assert tuple(out.shape) == (2, 5, 4)


@pytest.mark.parametrize("bottleneck", [0, -1, 1.5, True, "2", None])
def test_bad_bottleneck(bottleneck):
    with pytest.raises(ValueError, match=r"`bottleneck`.*Received: "
                       r"bottleneck="):
        Adapter(bottleneck=bottleneck)


def test_bad_activation():
    with pytest.raises(ValueError, match="`activation`.*relux"):
        Adapter(bottleneck=2, activation="relux")


def test_unknown_last_axis():
    with pytest.raises(ValueError, match="input_shape"):
        Adapter(bottleneck=2).build((None, None))


def test_dtype_policy_reaches_the_sublayers():
    layer = Adapter(bottleneck=2, dtype="mixed_float16")
    out = layer(np.ones((2, 4), "float32"))
    assert layer.down.dtype_policy.name == "mixed_float16"
    assert layer.up.compute_dtype == "float16"
    assert keras.backend.standardize_dtype(out.dtype) == "float16"


def test_config_round_trip():
    layer = Adapter(bottleneck=5, activation="gelu", name="a")
    clone = Adapter.from_config(layer.get_config())
    assert (clone.bottleneck, clone.activation, clone.name) == (5, "gelu", "a")


def test_fit_step_trains_and_save_load(tmp_path):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, name="frozen")(inputs)
    outputs = Adapter(bottleneck=2, name="adapter")(hidden)
    model = keras.Model(inputs, outputs)
    model.get_layer("frozen").trainable = False
    assert len(model.trainable_weights) == 4
    model.compile(keras.optimizers.SGD(0.1), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype("float32")
    before = [numpy(w) for w in model.get_layer("adapter").weights]
    model.fit(x, rng.normal(size=(8, 4)), verbose=0)
    after = [numpy(w) for w in model.get_layer("adapter").weights]
    # the up-projection starts at zero: the first step moves it
    assert not np.allclose(before[2], after[2])
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(restored.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)
