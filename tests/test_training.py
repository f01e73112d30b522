"""Tests of mtlbook.training.MultiTaskModel and its callbacks."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlbook.training import (
    GradientConflictHistory, MultiTaskModel, TaskWeightHistory,
    mean_pairwise_cosine,
)
from mtlbook.weighting import (
    CAGrad, MGDA, DynamicWeightAverage, EqualWeighting, GradNorm, PCGrad,
    StaticWeighting, UncertaintyWeighting, pcgrad,
)

TASKS = ("a", "b")


def make_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int32"),
         "b": (3.0 * x[:, 1] - x[:, 2]).astype("float32")[:, None]}
    return x, y


def make_model(strategy=None, seed=0, optimizer="sgd", **kwargs):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    trunk = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {"a": keras.layers.Dense(2, name="a")(trunk),
               "b": keras.layers.Dense(1, name="b")(trunk)}
    model = MultiTaskModel(inputs, outputs, strategy=strategy, **kwargs)
    model.compile(
        optimizer=optimizer,
        loss={"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "b": "mse"},
        metrics={"a": ["accuracy"], "b": ["mae"]},
    )
    return model


ALL = [EqualWeighting, lambda: StaticWeighting({"a": 1.0, "b": 0.1}),
       UncertaintyWeighting, DynamicWeightAverage, GradNorm, PCGrad, MGDA,
       CAGrad]


@pytest.mark.parametrize("factory", ALL)
def test_fit_logs_per_task_values(factory):
    x, y = make_data()
    model = make_model(factory(), log_conflict=True)
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                        validation_data=(x, y)).history
    for key in ("loss", "a_loss", "b_loss", "a_accuracy", "b_mae",
                "a_weight", "b_weight", "gradient_cosine", "val_loss",
                "val_a_loss", "val_b_loss", "val_a_accuracy", "val_b_mae"):
        assert len(history[key]) == 2, key
        assert np.all(np.isfinite(history[key])), key
    assert -1.0 <= history["gradient_cosine"][0] <= 1.0
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    assert {"a_loss", "b_loss", "a_accuracy"} <= set(result)


def test_variable_split_and_override():
    model = make_model(EqualWeighting())
    assert [v.path for v in model.shared_variables] == ["trunk/kernel",
                                                        "trunk/bias"]
    assert [v.path for v in model.task_variables["a"]] == ["a/kernel", "a/bias"]
    override = make_model(PCGrad(), shared_layers=["trunk"])
    assert len(override.shared_variables) == 2
    with pytest.raises(ValueError, match="shared variables"):
        make_model(PCGrad(), shared_layers=[])
    with pytest.raises(ValueError, match="shared_layers"):
        make_model(EqualWeighting(), shared_layers=["nope"])


def test_gradient_method_without_shared_variables_raises():
    inputs = keras.Input((4,))
    outputs = {"a": keras.layers.Dense(1)(inputs),
               "b": keras.layers.Dense(1)(inputs)}
    with pytest.raises(ValueError, match="shared variables"):
        MultiTaskModel(inputs, outputs, strategy=PCGrad())
    MultiTaskModel(inputs, outputs)  # loss weighting needs none


def test_clear_errors():
    inputs = keras.Input((4,))
    trunk = keras.layers.Dense(3)(inputs)
    outputs = {"a": keras.layers.Dense(1)(trunk),
               "b": keras.layers.Dense(1)(trunk)}
    with pytest.raises(TypeError, match="outputs"):
        MultiTaskModel(inputs, [outputs["a"]])
    with pytest.raises(TypeError, match="strategy"):
        MultiTaskModel(inputs, outputs, strategy="pcgrad")
    with pytest.raises(ValueError, match="built for 3 tasks"):
        MultiTaskModel(inputs, outputs, strategy=UncertaintyWeighting(3))
    with pytest.raises(ValueError, match="built for 3 tasks"):
        MultiTaskModel(inputs, outputs, strategy=StaticWeighting([1, 1, 1]))
    with pytest.raises(ValueError, match="weights"):
        MultiTaskModel(inputs, outputs,
                       strategy=StaticWeighting({"a": 1.0, "c": 2.0}))
    model = MultiTaskModel(inputs, outputs)
    with pytest.raises(ValueError, match="unknown=\\['c'\\]"):
        model.compile("sgd", loss={"a": "mse", "c": "mse"})
    with pytest.raises(ValueError, match="missing=\\['b'\\]"):
        model.compile("sgd", loss={"a": "mse"})
    with pytest.raises(ValueError, match="metrics"):
        model.compile("sgd", loss={"a": "mse", "b": "mse"},
                      metrics={"z": ["mae"]})
    with pytest.raises(TypeError, match="loss"):
        model.compile("sgd", loss="mse")
    with pytest.raises(ValueError, match="loss_weights"):
        model.compile("sgd", loss={"a": "mse", "b": "mse"},
                      loss_weights={"a": 1.0, "b": 2.0})


def task_gradients(model, x, y):
    """Per-task gradients of the losses w.r.t. the network's variables."""
    losses = {"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              "b": keras.losses.MeanSquaredError()}
    grads = {}
    for task in TASKS:
        with tf.GradientTape() as tape:
            pred = model(x, training=True)[task]
            loss = losses[task](y[task], pred)
        grads[task] = tape.gradient(loss, model.network.trainable_variables)
    return grads


def flat(grads):
    return np.concatenate([g.numpy().ravel() for g in grads])


@pytest.mark.parametrize("method", ["pcgrad", "mgda", "cagrad"])
def test_gradient_method_step_matches_functions(method):
    x, y = make_data(32, seed=1)
    strategy = {"pcgrad": PCGrad(seed=4), "mgda": MGDA(),
                "cagrad": CAGrad()}[method]
    model = make_model(strategy, optimizer=keras.optimizers.SGD(0.1))
    before = [v.numpy().copy() for v in model.network.trainable_variables]
    grads = task_gradients(model, x, y)
    shared = np.stack([flat(grads[t][:2]) for t in TASKS])
    expected = strategy(shared, step=0).numpy()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    after = [v.numpy() for v in model.network.trainable_variables]
    step = np.concatenate([(b - a).ravel() for b, a in zip(before, after)])
    size = expected.size
    np.testing.assert_allclose(step[:size], 0.1 * expected, rtol=1e-4,
                               atol=1e-6)
    # heads get their own task's gradient, never projected
    heads = np.concatenate([flat(grads["a"][2:4]), flat(grads["b"][4:6])])
    np.testing.assert_allclose(step[size:], 0.1 * heads, rtol=1e-4,
                               atol=1e-6)


def test_pcgrad_layer_uses_step_seed():
    g = np.array([[1.0, 0.0], [-0.8, 0.6], [-0.6, -0.8]], "float32")
    layer = PCGrad(seed=5)
    np.testing.assert_allclose(layer(g, step=3).numpy(),
                               pcgrad(g, seed=5, step=3).numpy())


def test_gradnorm_in_fit_changes_weights_and_keeps_sum():
    x, y = make_data()
    model = make_model(GradNorm(alpha=1.5, learning_rate=0.05))
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    weights = np.array([history["a_weight"][-1], history["b_weight"][-1]])
    np.testing.assert_allclose(weights.sum(), 2.0, rtol=1e-5)
    assert not np.allclose(weights, 1.0)
    assert model.strategy.initialized.numpy() == 1.0


def test_callbacks_record_weights_and_conflict():
    x, y = make_data()
    weights, conflict = TaskWeightHistory(), GradientConflictHistory()
    model = make_model(GradNorm(), log_conflict=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[weights, conflict])
    assert np.array(weights.weights).shape == (4, 2)
    assert len(conflict.cosines) == 4
    with pytest.raises(ValueError, match="log_conflict"):
        make_model().fit(x, y, epochs=1, verbose=0,
                         callbacks=[GradientConflictHistory()])


def test_mean_pairwise_cosine_by_hand():
    g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")
    expected = (0.0 + 1 / np.sqrt(2) + 1 / np.sqrt(2)) / 3
    np.testing.assert_allclose(mean_pairwise_cosine(g).numpy(), expected,
                               rtol=1e-6)


@pytest.mark.parametrize("factory", [UncertaintyWeighting, GradNorm,
                                     DynamicWeightAverage, PCGrad])
def test_save_and_load_keeps_strategy_state(tmp_path, factory):
    x, y = make_data()
    model = make_model(factory(), optimizer="adam")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.strategy) is type(model.strategy)
    for a, b in zip(model.strategy.weights, restored.strategy.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy())
    np.testing.assert_allclose(restored.predict(x, verbose=0)["b"],
                               model.predict(x, verbose=0)["b"], rtol=1e-6)
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("factory", [DynamicWeightAverage, GradNorm,
                                     UncertaintyWeighting])
def test_backup_and_restore_resumes_exactly(tmp_path, factory):
    x, y = make_data()
    fit = dict(batch_size=16, epochs=4, verbose=0, shuffle=False)
    reference = make_model(factory(), optimizer="adam")
    reference.fit(x, y, **fit)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = make_model(factory(), optimizer="adam")
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(x, y, callbacks=[backup, _Interrupt()], **fit)
    resumed = make_model(factory(), optimizer="adam")
    resumed.fit(x, y, callbacks=[backup], **fit)
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6,
                                   atol=1e-7)
    if factory is DynamicWeightAverage:
        assert resumed.strategy.epochs_seen.numpy() == 4.0


@pytest.mark.parametrize("factory", [PCGrad, GradNorm, UncertaintyWeighting])
def test_mixed_precision_unscales_task_gradients(factory):
    x, y = make_data(32, seed=2)
    reference = make_model(factory(), optimizer=keras.optimizers.SGD(0.05))
    initial = [v.numpy().copy() for v in reference.network.weights]
    reference.fit(x, y, batch_size=32, epochs=1, verbose=0)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.05), initial_scale=256.0
        )
        model = make_model(factory(), optimizer=optimizer)
        assert model.network.get_layer("trunk").compute_dtype == "float16"
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    moved = [not np.allclose(a, b.numpy())
             for a, b in zip(initial, model.network.weights)]
    assert all(moved), "the mixed-precision step was skipped"
    for a, b in zip(reference.network.trainable_variables,
                    model.network.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=5e-3)
    np.testing.assert_allclose(
        reference.strategy.task_weights().numpy(),
        model.strategy.task_weights().numpy(), atol=1e-2,
    )


MIRRORED = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mtlbook.training import MultiTaskModel
    from mtlbook.weighting import GradNorm, PCGrad, UncertaintyWeighting

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int32"),
         "b": (3 * x[:, 1]).astype("float32")[:, None]}

    def build(strategy):
        keras.utils.set_random_seed(0)
        i = keras.Input((6,))
        h = keras.layers.Dense(8, activation="tanh", name="trunk")(i)
        o = {"a": keras.layers.Dense(2, name="a")(h),
             "b": keras.layers.Dense(1, name="b")(h)}
        m = MultiTaskModel(i, o, strategy=strategy, log_conflict=True)
        m.compile(keras.optimizers.SGD(0.1), loss={
            "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "b": "mse"})
        return m

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for factory in (PCGrad, GradNorm, UncertaintyWeighting):
        single = build(factory())
        single.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        with mirrored.scope():
            model = build(factory())
        assert model.distribute_strategy.num_replicas_in_sync == 2
        h = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                      shuffle=False).history
        diff = max(float(np.max(np.abs(a.numpy() - b.numpy())))
                   for a, b in zip(single.weights, model.weights))
        print(factory.__name__, "max_diff", diff, "loss", h["loss"][-1])
        assert diff < 1e-5, diff
    print("MIRRORED_OK")
""")


def test_mirrored_strategy_matches_single_device():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED], capture_output=True, text=True,
        timeout=300,
    )
    assert "MIRRORED_OK" in result.stdout, result.stdout + result.stderr


def test_weight_and_conflict_plots():
    from mtlbook.plot import plot_gradient_conflict, plot_task_weights

    figure = plot_task_weights(np.ones((5, 2)), ["a", "b"], title="w")
    assert len(figure.axes[0].lines) == 2
    figure = plot_gradient_conflict(np.linspace(-1, 1, 30), window=5)
    assert len(figure.axes) == 2
    with pytest.raises(ValueError, match="weights"):
        plot_task_weights(np.ones((5, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="cosines"):
        plot_gradient_conflict([])


# ------------------------------------------------------------ input checks
def test_fit_before_compile_says_to_compile():
    x, y = make_data()
    inputs = keras.Input((6,))
    trunk = keras.layers.Dense(3)(inputs)
    model = MultiTaskModel(inputs, {"a": keras.layers.Dense(2)(trunk),
                                    "b": keras.layers.Dense(1)(trunk)})
    with pytest.raises(ValueError, match="compile"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="compile"):
        model.evaluate(x, y, verbose=0)
    with pytest.raises(ValueError, match="compile"):
        model.compute_task_losses(y, model(x))
    assert set(model.predict(x, verbose=0)) == {"a", "b"}


@pytest.mark.parametrize("factory", [EqualWeighting, PCGrad])
def test_targets_missing_a_task_raise_clearly(factory):
    x, y = make_data()
    model = make_model(factory())
    missing = {"a": y["a"]}
    match = r"missing=\['b'\]"
    with pytest.raises(ValueError, match=match):
        model.fit(x, missing, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=1, verbose=0, validation_data=(x, missing))
    with pytest.raises(ValueError, match=match):
        model.evaluate(x, missing, verbose=0)
    with pytest.raises(ValueError, match=r"keys=\['a'\]"):
        model.evaluate(x, missing, verbose=0)
    with pytest.raises(ValueError, match=r"targets in `validation_data`"):
        model.fit(x, y, epochs=1, verbose=0, validation_data=(x, missing))
    dataset = tf.data.Dataset.from_tensor_slices((x, missing)).batch(16)
    with pytest.raises(ValueError, match=match):
        model.fit(dataset, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=1, verbose=0, validation_data=dataset)

    def batches():  # seen only when the step is traced
        while True:
            yield x[:16], {"a": y["a"][:16]}

    with pytest.raises(ValueError, match=match):
        model.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0,
                  shuffle=False)
    with pytest.raises(ValueError, match=match):
        model.evaluate(batches(), steps=2, verbose=0)
    # the model still trains once the targets are right
    history = model.fit(x, y, epochs=1, verbose=0,
                        validation_data=(x, y)).history
    assert np.isfinite(history["val_loss"][0])


def test_unknown_target_keys_are_not_ignored():
    x, y = make_data()
    model = make_model()
    with pytest.raises(ValueError, match=r"unknown=\['c'\]"):
        model.fit(x, {**y, "c": y["b"]}, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"targets in `y` must be a dict"):
        model.compute_task_losses([y["a"], y["b"]], model(x))
    with pytest.raises(ValueError, match=r"sample_weight.*\['z'\]"):
        model.compute_task_losses(y, model(x),
                                  sample_weight={"a": np.ones(64),
                                                 "z": np.ones(64)})
    partial = model.compute_task_losses(
        y, model(x), sample_weight={"a": np.ones(64, "float32")})
    np.testing.assert_allclose(partial.numpy(),
                               model.compute_task_losses(y, model(x)).numpy(),
                               rtol=1e-6)


def test_gradnorm_layer_must_be_reached_by_every_task():
    with pytest.raises(ValueError, match=r"\['b'\] do not reach layer 'a'"):
        make_model(GradNorm(layer="a"))
    with pytest.raises(ValueError, match="layer="):
        make_model(GradNorm(layer="nope"))
    make_model(GradNorm(layer="trunk"))
    # default layer: the last shared one must reach every task, too
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    trunk = keras.layers.Dense(8, name="trunk")(inputs)
    pair = keras.layers.Dense(4, name="pair")(trunk)
    outputs = {"a": keras.layers.Dense(1, name="a")(pair),
               "b": keras.layers.Dense(1, name="b")(pair),
               "c": keras.layers.Dense(1, name="c")(trunk)}
    with pytest.raises(ValueError,
                       match=r"\['c'\] do not reach layer 'pair'.*"
                             r"GradNorm\(layer='trunk'\)"):
        MultiTaskModel(inputs, outputs, strategy=GradNorm())
    MultiTaskModel(inputs, outputs, strategy=GradNorm(layer="trunk"))


@pytest.mark.parametrize("value", ["trunk", ("trunk", 3), 5])
def test_shared_layers_must_be_a_list_of_names(value):
    with pytest.raises(TypeError, match="`shared_layers` must be None or a "
                                        "list"):
        make_model(PCGrad(), shared_layers=value)


@pytest.mark.parametrize("value", ["no", 0, 1.0, None])
def test_log_conflict_must_be_a_bool(value):
    with pytest.raises(TypeError, match="`log_conflict` must be a bool"):
        make_model(log_conflict=value)
    make_model(log_conflict=np.bool_(True))


def test_network_argument_checks():
    model = make_model()
    inputs = keras.Input((6,))
    with pytest.raises(ValueError, match="either `network` or `inputs`"):
        MultiTaskModel(inputs, {"a": keras.layers.Dense(1)(inputs)},
                       network=model.network)
    with pytest.raises(TypeError, match="`network` must be"):
        MultiTaskModel(network="network")
    with pytest.raises(TypeError, match="strategy"):
        MultiTaskModel(network=model.network, strategy=PCGrad)


def test_helper_argument_checks():
    x, y = make_data(8)
    model = make_model()
    with tf.GradientTape(persistent=True) as tape:
        losses = model.compute_task_losses(y, model(x, training=True))
    shared = model.shared_variables
    from mtlbook.training import task_gradient_matrix

    assert task_gradient_matrix(tape, [losses[0], losses[1]],
                                shared).shape == (2, 8 * 6 + 8)
    with pytest.raises(TypeError, match="`tape` must be"):
        task_gradient_matrix("tape", [losses[0]], shared)
    with pytest.raises(ValueError, match="`variables` must be"):
        task_gradient_matrix(tape, [losses[0]], shared[0])
    with pytest.raises(ValueError, match="`task_losses` must"):
        task_gradient_matrix(tape, [], shared)
    for bad in ([[1.0, 0.0]], [1.0, 0.0]):
        with pytest.raises(ValueError, match="task_gradients.shape"):
            mean_pairwise_cosine(bad)


def test_task_weight_history_needs_a_strategy():
    x, y = make_data()
    inputs = keras.Input((6,))
    plain = keras.Model(inputs, {"a": keras.layers.Dense(2, name="a")(inputs),
                                 "b": keras.layers.Dense(1, name="b")(inputs)})
    plain.compile("sgd", loss={"a": "mse", "b": "mse"})
    with pytest.raises(ValueError, match="TaskWeightHistory needs"):
        plain.fit(x, {"a": np.ones((64, 2)), "b": y["b"]}, verbose=0,
                  callbacks=[TaskWeightHistory()])


def test_unknown_loss_name_names_the_task():
    model = make_model()
    with pytest.raises(ValueError, match=r"`loss` of task 'b'.*no_such_loss"):
        model.compile("sgd", loss={"a": "mse", "b": "no_such_loss"})


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_mean_pairwise_cosine_is_scale_free(scale):
    g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")
    expected = (0.0 + 1 / np.sqrt(2) + 1 / np.sqrt(2)) / 3
    np.testing.assert_allclose(mean_pairwise_cosine(g * scale).numpy(),
                               expected, rtol=1e-6)
    with_zero = np.array([[0.0, 0.0], [scale, scale]], "float32")
    assert mean_pairwise_cosine(with_zero).numpy() == 0.0
