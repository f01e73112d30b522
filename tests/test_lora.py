"""Tests for mtlbook.transfer.lora and the BitFit rule (`bitfit`)."""

import keras
import numpy as np
import pytest

from mtlbook.transfer import (
    bitfit,
    enable_lora,
    is_bias,
    load_lora_state,
    lora_parameter_count,
    lora_state,
    merge_lora,
    takes_lora,
)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def mlp(name="mlp"):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="d1")(inputs)
    hidden = keras.layers.Dense(4, activation="relu", name="d2")(hidden)
    outputs = keras.layers.Dense(3, name="head")(hidden)
    return keras.Model(inputs, outputs, name=name)


X = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")


def randomize_b(model):
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if getattr(layer, "lora_enabled", False):
            shape = tuple(layer.lora_kernel_b.shape)
            layer.lora_kernel_b.assign(rng.normal(size=shape) * 0.5)


def test_enable_lora_freezes_all_but_the_factors_and_starts_unchanged():
    model = mlp()
    before = model.predict(X, verbose=0)
    enable_lora(model, rank=2, layers=["d1", model.get_layer("d2")])
    assert [w.path for w in model.trainable_weights] == [
        "d1/lora_kernel_a", "d1/lora_kernel_b",
        "d2/lora_kernel_a", "d2/lora_kernel_b"]
    np.testing.assert_array_equal(model.predict(X, verbose=0), before)
    # r * (d_in + d_out) per layer: 2 * (6 + 8) + 2 * (8 + 4)
    assert lora_parameter_count(model) == 52


def test_enable_lora_default_takes_every_dense_layer():
    model = enable_lora(mlp(), rank=1)
    assert lora_parameter_count(model) == 14 + 12 + 7
    assert lora_parameter_count(mlp()) == 0


def test_lora_kernel_is_w_plus_a_b_by_hand():
    layer = keras.layers.Dense(2, use_bias=False)
    layer.build((None, 2))
    layer.set_weights([np.eye(2, dtype="float32")])
    model = keras.Sequential([keras.Input((2,)), layer])
    enable_lora(model, rank=1)
    layer.lora_kernel_a.assign([[1.0], [2.0]])
    layer.lora_kernel_b.assign([[3.0, 0.5]])
    # W + A @ B = [[1 + 3, 0.5], [6, 1 + 1]] (scale alpha / r = 1)
    merged = merge_lora(model)
    np.testing.assert_allclose(numpy(merged.layers[-1].kernel),
                               [[4.0, 0.5], [6.0, 2.0]])
    np.testing.assert_allclose(merged.predict(np.array([[1.0, 1.0]]),
                                              verbose=0), [[10.0, 2.5]])


def test_merge_lora_keeps_the_outputs_and_drops_the_factors():
    model = enable_lora(mlp(), rank=2)
    randomize_b(model)
    expected = model.predict(X, verbose=0)
    merged = merge_lora(model)
    assert not any("lora" in w.path for w in merged.weights)
    assert len(merged.weights) == 6
    np.testing.assert_allclose(merged.predict(X, verbose=0), expected,
                               rtol=1e-5, atol=1e-5)
    # the LoRA model itself is unchanged
    assert lora_parameter_count(model) > 0


def test_merge_lora_with_a_nested_backbone():
    inputs = keras.Input((6,))
    backbone = keras.Model(
        inputs, keras.layers.Dense(8, name="block")(inputs), name="backbone")
    enable_lora(backbone, rank=2)
    outer_inputs = keras.Input((6,))
    model = keras.Model(outer_inputs,
                        keras.layers.Dense(3, name="head")(
                            backbone(outer_inputs)))
    randomize_b(backbone)
    merged = merge_lora(model)
    np.testing.assert_allclose(merged.predict(X, verbose=0),
                               model.predict(X, verbose=0), rtol=1e-5,
                               atol=1e-5)


def test_state_switches_tasks_on_one_backbone():
    model = enable_lora(mlp(), rank=2)
    first = lora_state(model)
    assert sorted(first) == [f"{n}/lora_kernel_{f}" for n in ("d1", "d2",
                                                            "head")
                             for f in "ab"]
    output_first = model.predict(X, verbose=0)
    randomize_b(model)
    second = lora_state(model)
    output_second = model.predict(X, verbose=0)
    load_lora_state(model, first)
    np.testing.assert_allclose(model.predict(X, verbose=0), output_first)
    load_lora_state(model, second)
    np.testing.assert_allclose(model.predict(X, verbose=0), output_second)


def test_fit_step_changes_only_the_factors(tmp_path):
    model = enable_lora(mlp(), rank=2, layers=["d1", "d2"])
    model.get_layer("head").trainable = True
    randomize_b(model)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    before = {w.path: numpy(w) for w in model.weights}
    model.fit(X, np.ones((5, 3)), verbose=0)
    changed = {w.path for w in model.weights
               if not np.array_equal(before[w.path], numpy(w))}
    assert changed == {"d1/lora_kernel_a", "d1/lora_kernel_b",
                       "d2/lora_kernel_a", "d2/lora_kernel_b",
                       "head/kernel", "head/bias"}
    model.save(tmp_path / "lora.keras")
    restored = keras.saving.load_model(tmp_path / "lora.keras")
    np.testing.assert_allclose(restored.predict(X, verbose=0),
                               model.predict(X, verbose=0), rtol=1e-5,
                               atol=1e-6)


def test_takes_lora():
    assert takes_lora(keras.layers.Dense(2))
    assert takes_lora(keras.layers.Embedding(4, 2))
    assert not takes_lora(keras.layers.LayerNormalization())
    assert not takes_lora(mlp())
    assert not takes_lora("dense")


def test_enable_lora_bad_inputs():
    with pytest.raises(TypeError, match="`model`.*Received: model=str"):
        enable_lora("model", rank=2)
    for rank in (0, -1, 1.5, True, "2", None):
        with pytest.raises(ValueError, match="`rank`.*Received: rank="):
            enable_lora(mlp(), rank=rank)
    with pytest.raises(ValueError, match="`layers`.*'nope'"):
        enable_lora(mlp(), rank=2, layers=["nope"])
    for layers in ("d1", [], keras.layers.Dense(2)):
        with pytest.raises(TypeError, match="`layers`"):
            enable_lora(mlp(), rank=2, layers=layers)
    norm = keras.Sequential([keras.Input((4,)),
                             keras.layers.LayerNormalization(name="norm")])
    with pytest.raises(ValueError, match="`layers`.*'norm'"):
        enable_lora(norm, rank=2, layers=["norm"])
    with pytest.raises(ValueError, match="`model` has no layer"):
        enable_lora(norm, rank=2)
    model = enable_lora(mlp(), rank=2, layers=["d1"])
    with pytest.raises(ValueError, match="'d1' \\(has LoRA already\\)"):
        enable_lora(model, rank=2, layers=["d1"])
    with pytest.raises(ValueError, match="'x' \\(not built\\)"):
        layer = keras.layers.Dense(2, name="x")
        enable_lora(layer, rank=2, layers=[layer])


def test_state_and_merge_bad_inputs():
    with pytest.raises(ValueError, match="`model` must have LoRA"):
        lora_state(mlp())
    model = enable_lora(mlp(), rank=2)
    state = lora_state(model)
    with pytest.raises(TypeError, match="`state`.*Received: state=list"):
        load_lora_state(model, [1])
    with pytest.raises(ValueError, match="`state` must have the keys"):
        load_lora_state(model, {"d1/lora_kernel_a": state["d1/lora_kernel_a"]})
    bad = dict(state, **{"d1/lora_kernel_a": np.zeros((6, 3))})
    with pytest.raises(ValueError, match=r"Received: state\['d1/lora_kernel_a"
                       r"'\] of shape \(6, 3\)"):
        load_lora_state(model, bad)
    with pytest.raises(TypeError, match="`model`.*Received: model=Dense"):
        merge_lora(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="`model`.*Received: model=int"):
        lora_parameter_count(3)


def test_bitfit_trains_only_biases_and_heads():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="d1")(inputs)
    hidden = keras.layers.LayerNormalization(name="norm")(hidden)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    outputs = keras.layers.Dense(3, name="head")(hidden)
    model = bitfit(keras.Model(inputs, outputs), heads=["head"])
    assert [w.path for w in model.trainable_weights] == [
        "d1/bias", "norm/beta", "head/kernel", "head/bias"]
    assert not model.get_layer("bn").trainable
    model.compile(keras.optimizers.SGD(0.1), "mse")
    before = {w.path: numpy(w) for w in model.weights}
    model.fit(X, np.ones((5, 3)), verbose=0)
    changed = {w.path for w in model.weights
               if not np.array_equal(before[w.path], numpy(w))}
    assert changed == {"d1/bias", "norm/beta", "head/kernel", "head/bias"}


def test_is_bias():
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert [is_bias(dense, w) for w in dense.weights] == [False, True]
    norm = keras.layers.BatchNormalization()
    norm.build((None, 3))
    assert not any(is_bias(norm, w) for w in norm.weights)


def test_bitfit_bad_inputs():
    with pytest.raises(TypeError, match="`model`.*Received: model=str"):
        bitfit("model")
    for heads in ("head", keras.layers.Dense(2), 3):
        with pytest.raises(TypeError, match="`heads`.*Received: heads="):
            bitfit(mlp(), heads=heads)
    with pytest.raises(ValueError, match="`heads`.*'nope'"):
        bitfit(mlp(), heads=["nope"])


def test_is_bias_bad_inputs():
    with pytest.raises(TypeError, match="`layer`.*Received: layer=str"):
        is_bias("dense", None)
    with pytest.raises(TypeError, match="`variable`.*Received: variable=int"):
        is_bias(keras.layers.Dense(2), 3)
