"""Tests of mtlbook.layers: DenseStack, CrossStitch, MMoE/OMoE, CGC, PLE."""

import keras
import numpy as np
import pytest

from mtlbook.layers import CGC, PLE, CrossStitch, DenseStack, MMoE, OMoE


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def data(n=6, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# every layer, built inside a small model with a single (batch, 5) input
LAYERS = {
    "dense_stack": lambda: DenseStack((4, 3)),
    "mmoe": lambda: MMoE(num_tasks=2, num_experts=3, expert_units=(4,)),
    "omoe": lambda: OMoE(num_tasks=2, num_experts=3, expert_units=(4,)),
    "cgc": lambda: CGC(num_tasks=2, num_task_experts=1, num_shared_experts=2,
                       expert_units=(4,), output_shared=True),
    "ple": lambda: PLE(num_tasks=2, num_levels=2, expert_units=(4,)),
}


def model_with(name):
    inputs = keras.Input((5,))
    outputs = LAYERS[name]()(inputs)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return keras.Model(inputs, outputs)


# ---------------------------------------------------------------- DenseStack

def test_dense_stack_shapes_weights_and_output_activation():
    layer = DenseStack((4, 3), output_activation="linear")
    y = layer(data())
    assert y.shape == (6, 3)
    assert layer.count_params() == (5 * 4 + 4) + (4 * 3 + 3)
    assert layer.dense_layers[-1].get_config()["activation"] == "linear"
    assert layer.dense_layers[0].get_config()["activation"] == "relu"


def test_dense_stack_value_by_hand():
    layer = DenseStack((2,), activation="relu")
    layer.build((None, 3))
    layer.dense_layers[0].set_weights(
        [np.array([[1, -1], [2, 0], [0, 1]], "float32"),
         np.array([0.5, -0.5], "float32")])
    y = numpy(layer(np.array([[1.0, 1.0, 1.0]], "float32")))
    np.testing.assert_allclose(y, [[3.5, 0.0]])


@pytest.mark.parametrize("units", [
    (), 3, (4, 0), ("a",), (4, -2), (True,), (4, 2.0), "32", None,
    np.array([4, 3]),
])
def test_dense_stack_bad_units_raise(units):
    with pytest.raises(ValueError, match="`units` must be a non-empty list"):
        DenseStack(units)


def test_dense_stack_accepts_numpy_int_units_as_ints():
    layer = DenseStack([np.int64(4), 3])
    assert layer.units == (4, 3) and type(layer.units[0]) is int
    assert DenseStack.from_config(layer.get_config()).units == (4, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": "relux"}, "`activation`.*Received: activation='relux'"),
    ({"output_activation": 3}, "`output_activation`"),
])
def test_dense_stack_unknown_activation_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DenseStack((4,), **kwargs)


@pytest.mark.parametrize("inputs", [
    np.zeros(5, "float32"), [data(), data()],
])
def test_dense_stack_bad_inputs_raise(inputs):
    with pytest.raises(ValueError, match="`inputs` must be one tensor"):
        DenseStack((4,))(inputs)


# --------------------------------------------------------------- CrossStitch

def test_cross_stitch_initial_matrix_and_value_by_hand():
    a, b, c = data(seed=1), data(seed=2), data(seed=3)
    layer = CrossStitch(self_weight=0.8)
    outputs = [numpy(y) for y in layer([a, b, c])]
    assert len(outputs) == 3 and layer.count_params() == 9
    np.testing.assert_allclose(outputs[0], 0.8 * a + 0.1 * b + 0.1 * c,
                               rtol=1e-5, atol=1e-6)
    layer.alpha.assign(np.array([[1, 2, 0], [0, 1, 0], [0, 0, -1]], "float32"))
    outputs = [numpy(y) for y in layer([a, b, c])]
    np.testing.assert_allclose(outputs[0], a + 2 * b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[2], -c, rtol=1e-5, atol=1e-6)


def test_cross_stitch_self_weight_one_is_identity():
    inputs = [data(seed=1), data(seed=2)]
    for x, y in zip(inputs, CrossStitch(self_weight=1.0)(inputs)):
        np.testing.assert_allclose(numpy(y), x)


@pytest.mark.parametrize("self_weight", [
    1.5, -0.1, "0.9", True, float("nan"), None,
])
def test_cross_stitch_bad_self_weight_raises(self_weight):
    with pytest.raises(ValueError, match="self_weight"):
        CrossStitch(self_weight=self_weight)


def test_cross_stitch_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least 2"):
        CrossStitch()([data()])
    with pytest.raises(ValueError, match="same shape"):
        CrossStitch()([data(d=5), data(d=4)])
    with pytest.raises(ValueError, match="same shape"):
        CrossStitch()([data(n=6), data(n=4)])


def test_cross_stitch_save_load_and_fit(tmp_path):
    inputs = [keras.Input((5,)), keras.Input((5,))]
    stitched = CrossStitch()(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(1)(h) for h in stitched])
    model.compile("sgd", loss=["mse", "mse"])
    before = model.get_weights()
    x = [data(32, seed=1), data(32, seed=2)]
    model.fit(x, [np.ones((32, 1)), np.zeros((32, 1))], epochs=1, verbose=0)
    assert not np.allclose(model.layers[2].get_weights()[0], before[0])
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    for p, q in zip(
        model.predict(x, verbose=0), restored.predict(x, verbose=0)
    ):
        np.testing.assert_allclose(p, q, rtol=1e-6)


# ---------------------------------------------------------------- MMoE, OMoE

def test_mmoe_shapes_and_weight_count():
    layer = MMoE(num_tasks=3, num_experts=4, expert_units=(8, 2))
    outputs, gates = layer(data(), return_gates=True)
    assert [o.shape for o in outputs] == [(6, 2)] * 3
    assert [g.shape for g in gates] == [(6, 4)] * 3
    experts = 4 * ((5 * 8 + 8) + (8 * 2 + 2))
    assert layer.count_params() == experts + 3 * (5 * 4 + 4)
    np.testing.assert_allclose(numpy(gates[0]).sum(-1), 1.0, rtol=1e-6)


def test_mmoe_value_by_hand():
    """Known linear experts and gate logits (kernels zero, biases set)."""
    layer = MMoE(num_tasks=2, num_experts=3, expert_units=(2,),
                 expert_activation="linear")
    layer.build((None, 2))
    kernels = [np.eye(2), 2 * np.eye(2), -np.eye(2)]
    for expert, kernel in zip(layer.experts, kernels):
        expert.dense_layers[0].set_weights(
            [kernel.astype("float32"), np.zeros(2, "float32")])
    logits = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]], "float32")
    for gate, bias in zip(layer.gates, logits):
        gate.set_weights([np.zeros((2, 3), "float32"), bias])
    x = np.array([[1.0, -2.0], [0.5, 4.0]], "float32")
    outputs, gates = layer(x, return_gates=True)
    experts = np.stack([x @ k for k in kernels], axis=1)  # (batch, 3, 2)
    for t in range(2):
        g = softmax(logits[t])
        np.testing.assert_allclose(numpy(gates[t]), np.tile(g, (2, 1)),
                                   rtol=1e-6)
        np.testing.assert_allclose(numpy(outputs[t]),
                                   np.einsum("k,bku->bu", g, experts),
                                   rtol=1e-5)


def test_omoe_gives_every_task_the_same_mixture():
    layer = OMoE(num_tasks=3, num_experts=4)
    outputs = [numpy(o) for o in layer(data())]
    assert len(layer.gates) == 1 and layer.num_gates == 1
    np.testing.assert_array_equal(outputs[0], outputs[2])
    one_gate = MMoE(num_tasks=3, num_experts=4, num_gates=1)
    one_gate.build((None, 5))
    assert one_gate.count_params() == layer.count_params()
    assert OMoE.from_config(layer.get_config()).num_gates == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"num_tasks": 0}, "num_tasks"),
    ({"num_experts": 0}, "num_experts"),
    ({"num_experts": 2.0}, "num_experts"),
    ({"num_tasks": 3, "num_gates": 2}, "num_gates"),
    ({"num_tasks": True}, "num_tasks"),
    ({"num_experts": True}, "num_experts"),
    ({"num_gates": True}, "num_gates"),
    ({"num_gates": 1.0}, "num_gates"),
    ({"num_gates": "1"}, "num_gates"),
    ({"expert_units": ()}, "units"),
    ({"expert_units": (8, True)}, "expert_units"),
    ({"expert_activation": "relux"}, "expert_activation"),
])
def test_mmoe_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MMoE(**kwargs)


def test_omoe_refuses_more_than_one_gate():
    # OMoE once dropped any `num_gates` silently
    with pytest.raises(ValueError, match="num_gates"):
        OMoE(num_tasks=3, num_gates=3)
    with pytest.raises(ValueError, match="num_gates"):
        OMoE(num_gates=True)
    assert OMoE(num_gates=1).num_gates == 1


@pytest.mark.parametrize("inputs", [
    np.zeros((2, 3, 4), "float32"), np.zeros(4, "float32"),
    [data(), data()],
])
def test_mmoe_bad_input_shape_raises(inputs):
    with pytest.raises(ValueError, match="`inputs` must be one tensor"):
        MMoE()(inputs)


# ------------------------------------------------------------------ CGC, PLE

def test_cgc_shapes_weights_and_gates():
    layer = CGC(num_tasks=2, num_task_experts=2, num_shared_experts=3,
                expert_units=(4,), output_shared=True)
    outputs, gates = layer(data(), return_gates=True)
    assert [o.shape for o in outputs] == [(6, 4)] * 3
    # task gates see own (2) + shared (3) experts; shared gate sees all 7
    assert [g.shape[-1] for g in gates] == [5, 5, 7]
    experts = 7 * (5 * 4 + 4)
    gate_weights = 2 * (5 * 5 + 5) + (5 * 7 + 7)
    assert layer.count_params() == experts + gate_weights
    assert len(CGC(num_tasks=2)(data())) == 2  # no shared output by default


def test_cgc_value_by_hand():
    """Task 0 sees only its expert and the shared one, with the gate's mix."""
    layer = CGC(num_tasks=2, num_task_experts=1, num_shared_experts=1,
                expert_units=(2,), expert_activation="linear")
    layer.build((None, 2))
    scales = {"task_0_expert_0": 1.0, "task_1_expert_0": 5.0,
              "shared_expert_0": -2.0}
    experts = layer.experts_of_task(0) + layer.experts_of_task(1)
    for expert in experts + layer.shared_experts:
        expert.dense_layers[0].set_weights(
            [scales[expert.name] * np.eye(2, dtype="float32"),
             np.zeros(2, "float32")])
    for gate, bias in zip(layer.task_gates, ([0.0, 1.0], [2.0, 0.0])):
        gate.set_weights([np.zeros((2, 2), "float32"),
                          np.array(bias, "float32")])
    x = np.array([[1.0, 2.0]], "float32")
    out = [numpy(o) for o in layer(x)]
    g0, g1 = softmax(np.array([0.0, 1.0])), softmax(np.array([2.0, 0.0]))
    np.testing.assert_allclose(out[0], (g0[0] * 1.0 + g0[1] * -2.0) * x,
                               rtol=1e-5)
    np.testing.assert_allclose(out[1], (g1[0] * 5.0 + g1[1] * -2.0) * x,
                               rtol=1e-5)


def test_cgc_reads_one_input_per_task_plus_shared():
    layer = CGC(num_tasks=2, expert_units=(3,), output_shared=True)
    outputs = layer([data(seed=1), data(seed=2), data(seed=3)])
    assert [o.shape for o in outputs] == [(6, 3)] * 3
    with pytest.raises(ValueError, match="num_tasks \\+ 1"):
        CGC(num_tasks=2)([data(), data()])


@pytest.mark.parametrize("kwargs, match", [
    ({"num_tasks": 0}, "num_tasks"),
    ({"num_task_experts": 0}, "num_task_experts"),
    ({"num_shared_experts": -1}, "num_shared_experts"),
    ({"num_tasks": True}, "num_tasks"),
    ({"num_task_experts": 1.0}, "num_task_experts"),
    ({"output_shared": "yes"}, "output_shared"),
    ({"output_shared": 1}, "output_shared"),
    ({"expert_units": [4, 0]}, "expert_units"),
    ({"expert_activation": "nope"}, "expert_activation"),
])
def test_cgc_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CGC(**kwargs)


@pytest.mark.parametrize("inputs", [
    np.zeros((2, 3, 5), "float32"),
    [data(), data(), np.zeros((6, 2, 5), "float32")],
])
def test_cgc_inputs_of_wrong_rank_raise(inputs):
    with pytest.raises(ValueError, match="`inputs` must be one tensor"):
        CGC(num_tasks=2)(inputs)


def test_ple_stacks_levels_with_shared_gates_below_the_last():
    layer = PLE(num_tasks=2, num_levels=3, num_task_experts=1,
                num_shared_experts=1, expert_units=(5,))
    outputs = layer(data())
    assert [o.shape for o in outputs] == [(6, 5)] * 2
    assert [lvl.output_shared for lvl in layer.levels] == [True, True, False]
    first = 3 * (5 * 5 + 5) + 2 * (5 * 2 + 2) + (5 * 3 + 3)
    middle = first  # level inputs are 5 wide too
    last = 3 * (5 * 5 + 5) + 2 * (5 * 2 + 2)
    assert layer.count_params() == first + middle + last


def test_ple_one_level_equals_cgc_and_bad_arguments_raise():
    assert len(PLE(num_levels=1).levels) == 1
    with pytest.raises(ValueError, match="num_levels"):
        PLE(num_levels=0)
    with pytest.raises(ValueError, match="num_levels"):
        PLE(num_levels=True)
    with pytest.raises(ValueError, match="num_tasks"):
        PLE(num_tasks=0)
    with pytest.raises(ValueError, match="expert_activation"):
        PLE(expert_activation="relux")
    with pytest.raises(ValueError, match="inputs"):
        PLE()(np.zeros((2, 3, 4), "float32"))
    # a list of two inputs once passed PLE's (batch, features) check
    with pytest.raises(ValueError, match="`inputs` must be one tensor"):
        PLE()([data(), data()])


# ----------------------------------------------- every layer: config, save, fit

@pytest.mark.parametrize("name", sorted(LAYERS))
def test_get_config_round_trip(name):
    layer = LAYERS[name]()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    x = data()
    assert [o.shape for o in np.atleast_1d(clone(x))] == [
        o.shape for o in np.atleast_1d(layer(x))]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_save_and_load_without_custom_objects(name, tmp_path):
    model = model_with(name)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    x = data()
    for a, b in zip(
        model.predict(x, verbose=0), restored.predict(x, verbose=0)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_save_and_load_restores_every_weight_exactly(name, tmp_path):
    # Keras before 3.15 silently skipped the weights of layers held in
    # nested lists (CGC's experts once were): the reloaded model then had
    # fresh random weights that predictions alone might not reveal.
    model = model_with(name)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    saved, loaded = model.get_weights(), restored.get_weights()
    assert len(saved) == len(loaded) == len(model.weights)
    for a, b in zip(saved, loaded):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_one_fit_step_changes_the_weights(name):
    model = model_with(name)
    model.compile(keras.optimizers.SGD(0.1),
                  loss=["mse"] * len(model.outputs))
    before = [w.copy() for w in model.get_weights()]
    x = data(16)
    targets = [np.ones((16, o.shape[-1]), "float32") for o in model.outputs]
    model.fit(x, targets, epochs=1, batch_size=16, verbose=0)
    changed = [
        not np.allclose(a, b) for a, b in zip(before, model.get_weights())
    ]
    assert np.mean(changed) > 0.5
