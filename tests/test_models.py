"""Tests of mtlbook.models: the multi-task model builders."""

import keras
import numpy as np
import pytest

from mtlbook import models

TASKS = {"task_a": 1, "task_b": 3}


def data(n=8, shape=(6,), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = {"task_a": rng.normal(size=n).astype("float32"),
         "task_b": rng.integers(0, 3, n).astype("int32")}
    return x, y


BUILDERS = {
    "shared_bottom": lambda: models.shared_bottom((6,), TASKS, (8,), (4,)),
    "cross_stitch": lambda: models.cross_stitch_model((6,), TASKS, (8, 4)),
    "mmoe": lambda: models.mmoe_model((6,), TASKS, 3, (4,), (4,)),
    "omoe": lambda: models.mmoe_model((6,), TASKS, 3, (4,), (4,),
                                      num_gates=1),
    "ple": lambda: models.ple_model((6,), TASKS, 2, 1, 1, (4,), (4,)),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_one_named_output_per_task_and_fit(name):
    keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    assert model.output_names == ["task_a", "task_b"]
    x, y = data()
    outputs = model.predict(x, verbose=0)
    assert outputs["task_a"].shape == (8, 1)
    assert outputs["task_b"].shape == (8, 3)
    model.compile(
        optimizer="adam",
        loss={"task_a": "mse",
              "task_b": keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True)},
    )
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert any(not np.allclose(a, b)
               for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("name", ["mmoe", "ple"])
def test_save_and_load_without_custom_objects(name, tmp_path):
    model = BUILDERS[name]()
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    x, _ = data()
    for task in TASKS:
        np.testing.assert_allclose(restored.predict(x, verbose=0)[task],
                                   model.predict(x, verbose=0)[task],
                                   rtol=1e-6)


def test_weight_counts_by_hand():
    # bottom 6*8+8; towers 2*(8*4+4); heads 4*1+1 and 4*3+3
    assert BUILDERS["shared_bottom"]().count_params() == 56 + 72 + 5 + 15
    # experts 3*(6*4+4); gates 2*(6*3+3); towers 2*(4*4+4); heads 5 + 15
    assert BUILDERS["mmoe"]().count_params() == 84 + 42 + 40 + 20
    # OMoE: one gate
    assert BUILDERS["omoe"]().count_params() == 84 + 21 + 40 + 20


def test_single_task_and_conv_trunk():
    model = models.single_task((12, 12, 3), "shape", 3, conv_filters=(4, 8))
    assert model.output_names == ["shape"] and model.name == "single_shape"
    x = np.zeros((2, 12, 12, 3), "float32")
    assert model.predict(x, verbose=0)["shape"].shape == (2, 3)
    trunk = models.conv_trunk((4, 8))
    assert trunk(x).shape == (2, 3 * 3 * 8)


def test_gate_weights_are_distributions_per_task():
    x, _ = data()
    gates = models.gate_weights(BUILDERS["mmoe"](), x)
    assert len(gates) == 2 and gates[0].shape == (8, 3)
    np.testing.assert_allclose(gates[1].sum(axis=1), 1.0, rtol=1e-5)
    omoe = models.gate_weights(BUILDERS["omoe"](), x)
    np.testing.assert_allclose(omoe[0], omoe[1])
    ple = models.gate_weights(BUILDERS["ple"](), x)
    assert ple[0].shape == (8, 2)


def test_gate_weights_batches_match_one_batch():
    x, _ = data()
    model = BUILDERS["mmoe"]()
    whole = models.gate_weights(model, x)
    batched = models.gate_weights(model, x, batch_size=3)  # 3 + 3 + 2
    for a, b in zip(whole, batched):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="batch_size"):
        models.gate_weights(model, x, batch_size=0)
    with pytest.raises(ValueError, match="`x`"):
        models.gate_weights(model, x[:0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="tasks"):
        models.shared_bottom((6,), {"a": 0})
    with pytest.raises(ValueError, match="tasks"):
        models.mmoe_model((6,), ["a", "b"])
    with pytest.raises(ValueError, match="tasks"):
        models.cross_stitch_model((6,), {"a": 1})
    with pytest.raises(ValueError, match="filters"):
        models.conv_trunk(16)
    with pytest.raises(TypeError, match="layer_name"):
        models.gate_weights(BUILDERS["shared_bottom"](), data()[0],
                            layer_name="bottom")


@pytest.mark.parametrize("build, error, match", [
    # the argument's own name, not a layer's `units`
    (lambda: models.shared_bottom((6,), TASKS, bottom_units=64),
     ValueError, "`bottom_units`"),
    (lambda: models.shared_bottom((6,), TASKS, tower_units=8),
     ValueError, "`tower_units`"),
    (lambda: models.shared_bottom((6,), TASKS, conv_filters=16),
     ValueError, "`conv_filters`"),
    (lambda: models.shared_bottom((6,), TASKS, conv_filters=(4,)),
     ValueError, "`input_shape`"),
    (lambda: models.shared_bottom((6, True), TASKS),
     ValueError, "`input_shape`"),
    (lambda: models.shared_bottom(6, TASKS), ValueError, "`input_shape`"),
    (lambda: models.shared_bottom((6,), {"a": True}), ValueError, "tasks"),
    (lambda: models.shared_bottom((6,), TASKS, name=3), TypeError, "`name`"),
    (lambda: models.single_task((6,), "a", units=True),
     ValueError, "`units`"),
    (lambda: models.single_task((6,), "a", 2, hidden_units=64),
     ValueError, "`hidden_units`"),
    (lambda: models.single_task((6,), 3, 2), TypeError, "`task`"),
    (lambda: models.cross_stitch_model((6,), TASKS, self_weight=True),
     ValueError, "`self_weight`"),
    (lambda: models.cross_stitch_model((6,), TASKS,
                                       self_weight=float("nan")),
     ValueError, "`self_weight`"),
    (lambda: models.cross_stitch_model((6,), TASKS, tower_units=4),
     ValueError, "`tower_units`"),
    (lambda: models.mmoe_model((6,), TASKS, num_experts=True),
     ValueError, "`num_experts`"),
    (lambda: models.mmoe_model((6,), TASKS, num_experts=0),
     ValueError, "`num_experts`"),
    (lambda: models.mmoe_model((6,), TASKS, num_gates=True),
     ValueError, "`num_gates`"),
    (lambda: models.mmoe_model((6,), TASKS, expert_units=16),
     ValueError, "`expert_units`"),
    (lambda: models.ple_model((6,), TASKS, num_levels=True),
     ValueError, "`num_levels`"),
    (lambda: models.ple_model((6,), TASKS, tower_units=8),
     ValueError, "`tower_units`"),
    (lambda: models.conv_trunk((4,), name=None), TypeError, "`name`"),
])
def test_bad_arguments_name_the_argument(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_no_tower_and_bad_gate_weights_input():
    model = models.shared_bottom((6,), TASKS, (8,), tower_units=())
    assert "task_a_tower" not in [layer.name for layer in model.layers]
    model = BUILDERS["mmoe"]()
    x = data()[0]
    with pytest.raises(TypeError, match="`model`"):
        models.gate_weights("mmoe", x)
    with pytest.raises(ValueError, match="`layer_name`.*'expert'"):
        models.gate_weights(model, x, layer_name="expert")
    with pytest.raises(TypeError, match="`x`"):
        models.gate_weights(model, [[0.0] * 6])
    with pytest.raises(ValueError, match=r"`x` must have shape \(n, 6\)"):
        models.gate_weights(model, x[:, :3])
    with pytest.raises(TypeError, match="model='mmoe'"):
        models.gate_weights("mmoe", x)


def test_side_by_side_names_and_targets():
    def small():
        return models.shared_bottom((6,), {"a": 1}, (4,))

    with pytest.raises(ValueError, match="`members` must be models with "
                                         "distinct names"):
        models.SideBySide({"m": small(), "n": small()})
    side = models.SideBySide({"m": small()})
    with pytest.raises(ValueError, match=r"`y` must .* \['a'\]"):
        side.targets({"b": np.zeros(6)})
    with pytest.raises(ValueError, match="`seed`"):
        models.seeded_weights({"mmoe": BUILDERS["mmoe"]}, seed=-1)
    with pytest.raises(ValueError, match="`seed`"):
        models.seeded_weights({"mmoe": BUILDERS["mmoe"]}, seed=True)


def test_reset_optimizer_zeros_state_but_not_learning_rate():
    model = BUILDERS["shared_bottom"]()
    model.compile(keras.optimizers.Adam(0.01),
                  loss={"task_a": "mse",
                        "task_b": keras.losses.SparseCategoricalCrossentropy(
                            from_logits=True)})
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    optimizer = model.optimizer
    assert int(optimizer.iterations) == 2
    models.reset_optimizer(optimizer)
    assert int(optimizer.iterations) == 0
    for variable in optimizer.variables:
        value = keras.ops.convert_to_numpy(variable)
        if "learning_rate" in variable.path:
            np.testing.assert_allclose(value, 0.01)
        else:
            assert not value.any(), variable.path
    with pytest.raises(TypeError, match="optimizer"):
        models.reset_optimizer("adam")


def test_seeded_weights_are_reproducible():
    builders = {"mmoe": BUILDERS["mmoe"], "omoe": BUILDERS["omoe"]}
    first = models.seeded_weights(builders, seed=3)
    again = models.seeded_weights(builders, seed=3)
    other = models.seeded_weights(builders, seed=4)
    assert list(first) == ["mmoe", "omoe"]
    for a, b in zip(first["mmoe"], again["mmoe"]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b)
               for a, b in zip(first["mmoe"], other["mmoe"]))
    with pytest.raises(ValueError, match="builders"):
        models.seeded_weights({}, seed=0)


def test_side_by_side_trains_each_member_as_a_separate_run():
    tasks = {"task_a": 1, "task_b": 1}
    builders = {
        "bottom": lambda: models.shared_bottom((6,), tasks, (8,), (4,)),
        "mmoe": lambda: models.mmoe_model((6,), tasks, 3, (4,), (4,)),
    }
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 6)).astype("float32")
    y = {t: rng.normal(size=12).astype("float32") for t in tasks}
    side = models.SideBySide({n: b() for n, b in builders.items()},
                             keras.optimizers.Adam(0.01), "mse")
    keys = ["bottom/task_a", "bottom/task_b", "mmoe/task_a", "mmoe/task_b"]
    assert sorted(side.model(x[:2])) == keys
    assert sorted(side.targets(y)) == keys
    np.testing.assert_array_equal(side.targets(y)["mmoe/task_b"], y["task_b"])
    start = models.seeded_weights(builders, seed=0)
    for run in range(2):  # the second run checks that `restart` restarts
        side.restart(start)
        side.fit(x, y, epochs=3, batch_size=4, seed=5)
    # the same training, separately: same start, same order of examples
    shuffles = np.random.default_rng(5)
    order = np.concatenate([shuffles.permutation(12) for _ in range(3)])
    for name, build in builders.items():
        alone = build()
        alone.set_weights(start[name])
        alone.compile(keras.optimizers.Adam(0.01), loss="mse")
        alone.fit(x[order], {t: v[order] for t, v in y.items()},
                  batch_size=4, shuffle=False, verbose=0)
        for a, b in zip(alone.get_weights(),
                        side.members[name].get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="members"):
        models.SideBySide({"a": "not a model"})
    with pytest.raises(ValueError, match="input shapes"):
        models.SideBySide({"a": builders["bottom"](),
                           "b": models.shared_bottom((5,), tasks, (8,))})
    with pytest.raises(ValueError, match="weights"):
        side.restart({"bottom": start["bottom"]})
    with pytest.raises(ValueError, match="epochs"):
        side.fit(x, y, epochs=0, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="`batch_size`"):
        side.fit(x, y, epochs=1, batch_size=True, seed=0)
    with pytest.raises(ValueError, match="`seed`"):
        side.fit(x, y, epochs=1, batch_size=4, seed=-1)
    with pytest.raises(ValueError, match=r"`y` must be a dict.*task_b"):
        side.fit(x, {"task_a": y["task_a"]}, epochs=1, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="one label per input"):
        side.fit(x, {t: v[:5] for t, v in y.items()}, epochs=1,
                 batch_size=4, seed=0)
    with pytest.raises(ValueError, match="validation_data"):
        side.fit(x, y, epochs=1, batch_size=4, seed=0,
                 validation_data=(x, {"task_a": y["task_a"]}))
