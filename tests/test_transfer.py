"""Tests of mtlbook.transfer: backbones, freezing, learning-rate groups,
schedules, gradual unfreezing and the cached pretrained network."""

import os
import warnings

import keras
import numpy as np
import pytest

from mtlbook.transfer import (
    DiscriminativeAdam,
    DiscriminativeSGD,
    GradualUnfreezing,
    SlantedTriangular,
    backbone,
    cache_directory,
    compile_classifier,
    discriminative_multipliers,
    freeze,
    multiplier_for,
    preprocessing_layer,
    pretrained_digits_cnn,
    scatter_on_canvas,
    small_cnn,
    trainable_summary,
    transfer_digits,
    unfreeze,
)

SMALL = dict(input_shape=(32, 32, 3), alpha=0.35)


def tiny_data(n=32, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 1)).astype("float32")
    return x, rng.integers(0, 3, n).astype("int32")


def bn_statistics(model):
    return [
        keras.ops.convert_to_numpy(w).copy()
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for w in (layer.moving_mean, layer.moving_variance)
    ]


# --- backbones ---------------------------------------------------------------


def test_backbone_without_weights_shape():
    model = backbone("mobilenet_v2", weights=None, pooling="avg", **SMALL)
    out = model(np.zeros((2, 32, 32, 3), "float32"))
    assert tuple(out.shape) == (2, int(1280))


def test_backbone_loads_a_local_weights_file(tmp_path):
    keras.utils.set_random_seed(1)
    source = backbone("mobilenet_v2", weights=None, **SMALL)
    path = tmp_path / "mobilenet_v2.weights.h5"
    source.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = backbone("mobilenet_v2", weights=str(path), **SMALL)
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_backbone_loads_a_keras_file(tmp_path):
    keras.utils.set_random_seed(1)
    source = backbone("mobilenet_v2", weights=None, **SMALL)
    path = tmp_path / "mobilenet_v2.keras"
    source.save(path)
    loaded = backbone("mobilenet_v2", weights=path, **SMALL)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3))
    x = x.astype("float32")
    np.testing.assert_allclose(
        source.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6
    )


def test_backbone_unknown_name_raises():
    with pytest.raises(ValueError, match="`name` must be one of"):
        backbone("resnet9000")


def test_backbone_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match="existing file"):
        backbone("mobilenet_v2", weights=str(tmp_path / "no.weights.h5"),
                 **SMALL)


def test_backbone_wrong_suffix_raises(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="weights.h5"):
        backbone("mobilenet_v2", weights=str(path), **SMALL)


def test_backbone_bad_weights_type_raises():
    with pytest.raises(TypeError, match="`weights` must be"):
        backbone("mobilenet_v2", weights=3, **SMALL)


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_backbone_mismatched_or_corrupt_file_raises(tmp_path):
    other = backbone("mobilenet_v2", weights=None, input_shape=(32, 32, 3),
                     alpha=0.5)
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(ValueError, match="failed to load"):
        backbone("mobilenet_v2", weights=str(path), **SMALL)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="exists but is not a zip archive"):
        backbone("mobilenet_v2", weights=str(corrupt), **SMALL)


def test_backbone_damaged_files_say_what_is_wrong(tmp_path):
    damaged = tmp_path / "damaged.weights.h5"
    damaged.write_bytes(b"half-written")
    with pytest.raises(ValueError, match="exists but is not an HDF5 file"):
        backbone("mobilenet_v2", weights=str(damaged), **SMALL)
    # a zip archive, but not a Keras model: the path and Keras's reason
    fake = tmp_path / "fake.keras"
    import zipfile

    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ValueError, match="exists but could not be loaded"):
        backbone("mobilenet_v2", weights=str(fake), **SMALL)
    folder = tmp_path / "folder.keras"
    folder.mkdir()
    with pytest.raises(ValueError, match="a folder"):
        backbone("mobilenet_v2", weights=str(folder), **SMALL)
    with pytest.raises(TypeError, match="include_top"):
        backbone("mobilenet_v2", include_top="no", **SMALL)


@pytest.mark.parametrize("kwargs, name", [
    (dict(input_shape=(32, 32)), "input_shape"),
    (dict(input_shape="32"), "input_shape"),
    (dict(input_shape=None), "input_shape"),
    (dict(input_shape=(0, 32, 3)), "input_shape"),
    (dict(input_shape=(32, 32, True)), "input_shape"),
    (dict(pooling="mean"), "pooling"),
    (dict(pooling=1), "pooling"),
])
def test_backbone_bad_shape_or_pooling_raises(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        backbone("mobilenet_v3_small", **{"input_shape": (32, 32, 3),
                                          **kwargs})


def test_preprocessing_layer_maps_pixels_to_minus_one_one():
    layer = preprocessing_layer("mobilenet_v2")
    out = keras.ops.convert_to_numpy(layer(np.array([[0.0, 255.0]])))
    np.testing.assert_allclose(out, [[-1.0, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="`name`"):
        preprocessing_layer("vgg")


# --- freezing ----------------------------------------------------------------


def test_freeze_and_unfreeze_by_name_index_fraction():
    model = small_cnn((8, 8, 1), 3, width=4)
    freeze(model)
    assert not model.trainable_weights
    unfreeze(model, from_layer="block3_conv")
    names = {w.path.split("/")[0] for w in model.trainable_weights}
    assert names == {"block3_conv", "classifier"}
    unfreeze(model, from_layer=-1)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {
        "classifier"}
    unfreeze(model, from_layer=1.0)
    summary = trainable_summary(model)
    assert summary["batchnorm_trainable"] == 0
    assert summary["batchnorm_frozen"] == 3
    # everything but the BatchNorm parameters trains
    bn_params = sum(int(np.prod(w.shape)) for layer in model.layers
                    if isinstance(layer, keras.layers.BatchNormalization)
                    for w in layer.weights)
    assert summary["frozen"] == bn_params
    unfreeze(model, from_layer=0.5)
    start = len(model.layers) - round(0.5 * len(model.layers))
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, keras.layers.BatchNormalization):
            assert layer.trainable == (index >= start)


def test_unfreeze_keeps_nested_batchnorm_frozen():
    inner = small_cnn((8, 8, 1), 3, width=4, name="inner")
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    unfreeze(outer, from_layer=0)
    norms = [layer for layer in inner.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    unfreeze(outer, from_layer=0, train_batchnorm=True)
    assert all(layer.trainable for layer in norms)


@pytest.mark.parametrize(
    "value, error",
    [("nope", ValueError), (99, ValueError), (0.0, ValueError),
     (1.5, ValueError), (True, TypeError), (None, TypeError)],
)
def test_unfreeze_bad_from_layer_raises(value, error):
    model = small_cnn((8, 8, 1), 3, width=4)
    with pytest.raises(error, match="from_layer"):
        unfreeze(model, from_layer=value)


def test_unfreeze_bad_train_batchnorm_raises():
    model = small_cnn((8, 8, 1), 3, width=4)
    with pytest.raises(TypeError, match="train_batchnorm"):
        unfreeze(model, train_batchnorm="yes")
    with pytest.raises(ValueError, match="from_layer"):
        unfreeze(model, from_layer=float("nan"))


def test_freeze_bad_model_raises():
    with pytest.raises(TypeError, match="`model` must be"):
        freeze("model")
    with pytest.raises(ValueError, match="sub-layers"):
        unfreeze(keras.layers.Dense(2))


def test_batchnorm_statistics_unchanged_when_fine_tuning():
    keras.utils.set_random_seed(0)
    model = compile_classifier(small_cnn((8, 8, 1), 3, width=4))
    x, y = tiny_data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # pretraining
    unfreeze(model, from_layer=0)
    before_stats = bn_statistics(model)
    before_conv = keras.ops.convert_to_numpy(
        model.get_layer("block1_conv").kernel).copy()
    compile_classifier(model)
    model.fit(x + 3.0, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(before_stats, bn_statistics(model)):
        np.testing.assert_array_equal(a, b)
    after_conv = keras.ops.convert_to_numpy(
        model.get_layer("block1_conv").kernel)
    assert not np.allclose(before_conv, after_conv)
    # breaking the rule: the moving statistics move
    unfreeze(model, from_layer=0, train_batchnorm=True)
    compile_classifier(model)
    model.fit(x + 3.0, y, epochs=1, batch_size=16, verbose=0)
    moved = [not np.allclose(a, b)
             for a, b in zip(before_stats, bn_statistics(model))]
    assert all(moved)


# --- learning-rate groups ----------------------------------------------------


def two_layer_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="low")(inputs)
    outputs = keras.layers.Dense(1, name="high")(hidden)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("optimizer_class", [DiscriminativeSGD,
                                             DiscriminativeAdam])
def test_learning_rate_groups_scale_each_update(optimizer_class):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    y = np.ones((16, 1), "float32")

    def updates(multipliers):
        keras.utils.set_random_seed(0)
        model = two_layer_model()
        start = [w.copy() for w in model.get_weights()]
        model.compile(optimizer_class(0.01, multipliers=multipliers),
                      loss="mse")
        model.train_on_batch(x, y)
        return [after - before
                for before, after in zip(start, model.get_weights())]

    plain = updates({})
    grouped = updates({"low": 0.25, "high/kernel": 0.0})
    # low/kernel, low/bias, high/kernel, high/bias
    np.testing.assert_allclose(grouped[0], 0.25 * plain[0], rtol=1e-4,
                               atol=1e-9)
    np.testing.assert_allclose(grouped[1], 0.25 * plain[1], rtol=1e-4,
                               atol=1e-9)
    np.testing.assert_array_equal(grouped[2], 0.0)
    np.testing.assert_allclose(grouped[3], plain[3], rtol=1e-5)


def test_variable_multiplier_maps_built_variables_only():
    model = two_layer_model()
    optimizer = DiscriminativeAdam(0.01, multipliers={"low": 0.25})
    with pytest.raises(ValueError, match="variable"):
        optimizer.variable_multiplier(model.get_layer("low").kernel)
    optimizer.build(model.trainable_variables)
    low, high = model.get_layer("low").kernel, model.get_layer("high").kernel
    assert optimizer.variable_multiplier(low) == 0.25
    assert optimizer.variable_multiplier(high) == 1.0
    if keras.backend.backend() == "tensorflow":
        # the backend variable that `update_step` receives
        assert optimizer.variable_multiplier(low.value) == 0.25
    stranger = keras.Variable(np.zeros(2), name="low")
    with pytest.raises(ValueError, match="variable"):
        optimizer.variable_multiplier(stranger)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute")
def test_learning_rate_groups_under_a_distribution_strategy():
    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.ones((8, 1), "float32")
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = two_layer_model()
        model.compile(DiscriminativeSGD(0.01, multipliers={"high": 0.0}),
                      loss="mse")
    low, high = (model.get_layer(n).get_weights() for n in ("low", "high"))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(low[0], model.get_layer("low").get_weights()[0])
    np.testing.assert_array_equal(high[0],
                                  model.get_layer("high").get_weights()[0])


def test_discriminative_multipliers_and_prefix_matching():
    model = small_cnn((8, 8, 1), 3, width=4)
    groups = [model.get_layer(n) for n in
              ("block1_conv", "block2_conv", "block3_conv", "classifier")]
    multipliers = discriminative_multipliers(groups, decay=2.0)
    assert multipliers["classifier/kernel"] == 1.0
    assert multipliers["block3_conv/kernel"] == 0.5
    assert multipliers["block1_conv/kernel"] == 0.125
    assert multiplier_for("a/b/c", {"a": 2.0, "a/b": 3.0}) == 3.0
    assert multiplier_for("ab/c", {"a": 2.0}) == 1.0
    with pytest.raises(ValueError, match="decay"):
        discriminative_multipliers(groups, decay=0)
    with pytest.raises(ValueError, match="groups"):
        discriminative_multipliers([])
    with pytest.raises(TypeError, match="groups"):
        discriminative_multipliers(["block1_conv"])


def test_bad_multipliers_raise():
    with pytest.raises(ValueError, match="multipliers"):
        DiscriminativeAdam(1e-3, multipliers={"a": -1.0})
    with pytest.raises(TypeError, match="multipliers"):
        DiscriminativeAdam(1e-3, multipliers=[("a", 1.0)])
    for value in (float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="multipliers"):
            DiscriminativeAdam(1e-3, multipliers={"low": value})
    with pytest.raises(TypeError, match="path"):
        multiplier_for(3, {"a": 1.0})
    with pytest.raises(TypeError, match="multipliers"):
        multiplier_for("a/kernel", [("a", 1.0)])
    for value in (float("nan"), -1.0):
        with pytest.raises(ValueError, match=r"multipliers\['a'\]"):
            multiplier_for("a/kernel", {"a": value})


def test_misspelled_multiplier_key_raises_when_built():
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    model = two_layer_model()
    optimizer = DiscriminativeAdam(0.01, multipliers={"lwo": 0.0})
    # the key and the layers that are there
    with pytest.raises(ValueError, match=r"'lwo'.*'high', 'low'"):
        optimizer.build(model.trainable_variables)
    model.compile(DiscriminativeSGD(0.01, multipliers={"high": 0.5,
                                                       "hihg/": 0.0}),
                  loss="mse")
    with pytest.raises(ValueError, match="'hihg/' matches no variable"):
        model.train_on_batch(x, y)
    # a prefix that stops inside a name is not a match
    with pytest.raises(ValueError, match="'lo'"):
        DiscriminativeSGD(0.01, multipliers={"lo": 0.5}).build(
            model.trainable_variables)
    # a frozen layer's variables never reach the optimizer
    frozen = two_layer_model()
    frozen.get_layer("low").trainable = False
    frozen.compile(DiscriminativeSGD(0.01, multipliers={"low": 0.5}),
                   loss="mse")
    with pytest.raises(ValueError, match="frozen layers"):
        frozen.train_on_batch(x, y)
    # exact paths and prefixes that match build fine
    good = DiscriminativeSGD(0.01, multipliers={"low/kernel": 0.5,
                                                "high": 0.0})
    good.build(model.trainable_variables)
    assert good.variable_multiplier(model.get_layer("high").bias) == 0.0


def test_discriminative_multipliers_need_built_trainable_layers():
    unbuilt = [keras.layers.Dense(2, name="d1"), keras.layers.Dense(1)]
    with pytest.raises(ValueError, match=r"group 0 \['d1'\] \(unbuilt\)"):
        discriminative_multipliers(unbuilt)
    model = small_cnn((8, 8, 1), 3, width=4)
    unfreeze(model)  # BatchNormalization frozen
    groups = [[model.get_layer("block1_conv"), model.get_layer("block1_bn")],
              model.get_layer("classifier")]
    multipliers = discriminative_multipliers(groups, decay=2.0)
    # only what the optimizer gets: no BatchNormalization variable
    assert sorted(multipliers) == ["block1_conv/kernel", "classifier/bias",
                                   "classifier/kernel"]
    DiscriminativeAdam(1e-3, multipliers=multipliers).build(
        model.trainable_variables)
    with pytest.raises(ValueError, match="frozen"):
        discriminative_multipliers([model.get_layer("block1_bn"),
                                    model.get_layer("classifier")])
    for decay in (float("inf"), float("nan"), True, "2"):
        with pytest.raises(ValueError, match="decay"):
            discriminative_multipliers(groups, decay=decay)


def test_grouped_optimizer_config_and_model_save_load(tmp_path):
    optimizer = DiscriminativeAdam(
        SlantedTriangular(1e-2, total_steps=10), multipliers={"low": 0.5})
    config = keras.optimizers.serialize(optimizer)
    restored = keras.optimizers.deserialize(config)
    assert isinstance(restored, DiscriminativeAdam)
    assert restored.multipliers == {"low": 0.5}
    model = two_layer_model()
    model.compile(optimizer, loss="mse")
    x = np.ones((4, 3), "float32")
    model.train_on_batch(x, np.ones((4, 1), "float32"))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, DiscriminativeAdam)
    assert loaded.optimizer.multipliers == {"low": 0.5}
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               loaded.predict(x, verbose=0), rtol=1e-6)


# --- slanted triangular schedule ---------------------------------------------


def test_slanted_triangular_values_at_known_steps():
    schedule = SlantedTriangular(0.32, total_steps=100, cut_fraction=0.1,
                                 ratio=32.0)

    def at(step):
        return float(keras.ops.convert_to_numpy(schedule(step)))

    assert at(0) == pytest.approx(0.01)
    assert at(5) == pytest.approx(0.01 * (1 + 0.5 * 31))
    assert at(10) == pytest.approx(0.32)
    assert at(55) == pytest.approx(0.01 * (1 + 0.5 * 31))
    assert at(100) == pytest.approx(0.01)
    assert at(500) == pytest.approx(0.01)


def test_slanted_triangular_serialization():
    schedule = SlantedTriangular(1e-3, total_steps=50, cut_fraction=0.2,
                                 ratio=10.0)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, SlantedTriangular)
    assert restored.get_config() == schedule.get_config()
    for step in (0, 7, 10, 33, 50):
        assert float(restored(step)) == pytest.approx(float(schedule(step)))


def test_slanted_triangular_takes_numpy_step_counts():
    schedule = SlantedTriangular(1e-3, total_steps=np.int64(10))
    assert schedule.get_config()["total_steps"] == 10
    assert type(schedule.get_config()["total_steps"]) is int


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(max_learning_rate=0.0), "max_learning_rate"),
     (dict(total_steps=1), "total_steps"),
     (dict(cut_fraction=1.0), "cut_fraction"),
     (dict(ratio=0.5), "ratio"),
     (dict(max_learning_rate=float("inf")), "max_learning_rate"),
     (dict(max_learning_rate=float("nan")), "max_learning_rate"),
     (dict(max_learning_rate=True), "max_learning_rate"),
     (dict(total_steps=True), "total_steps"),
     (dict(total_steps=10.0), "total_steps"),
     (dict(cut_fraction=float("nan")), "cut_fraction"),
     (dict(cut_fraction=True), "cut_fraction"),
     (dict(ratio=float("inf")), "ratio"),
     (dict(ratio=float("nan")), "ratio"),
     (dict(ratio=True), "ratio")],
)
def test_slanted_triangular_bad_arguments_raise(kwargs, name):
    arguments = dict(max_learning_rate=1e-3, total_steps=10)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        SlantedTriangular(**arguments)


# --- gradual unfreezing ------------------------------------------------------


def test_gradual_unfreezing_unfreezes_from_the_top():
    keras.utils.set_random_seed(0)
    model = small_cnn((8, 8, 1), 3, width=4)
    groups = [[model.get_layer(f"block{b}_conv"),
               model.get_layer(f"block{b}_bn")] for b in (1, 2, 3)]
    groups.append(model.get_layer("classifier"))
    compile_classifier(model)
    x, y = tiny_data()
    groups_for_check = groups
    groups = [g[0] if isinstance(g, list) else g for g in groups]
    kernels = {g.name: keras.ops.convert_to_numpy(g.kernel).copy()
               for g in groups}
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append({g.name: keras.ops.convert_to_numpy(
                g.kernel).copy() for g in groups})

    callback = GradualUnfreezing(groups_for_check)
    stats = bn_statistics(model)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0,
              callbacks=[callback, Snapshot()])
    assert callback.history == [(0, 1), (1, 2), (2, 3)]
    previous = kernels
    for epoch, snapshot in enumerate(snapshots):
        for index, group in enumerate(groups):
            changed = not np.array_equal(previous[group.name],
                                         snapshot[group.name])
            assert changed == (index >= len(groups) - 1 - epoch), (epoch,
                                                                    index)
        previous = snapshot
    # one optimizer, built once on all groups: its step counter carried on
    assert int(model.optimizer.iterations) == 3 * 2
    assert all(not layer.trainable for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization))
    for a, b in zip(stats, bn_statistics(model)):
        np.testing.assert_array_equal(a, b)


def test_gradual_unfreezing_rejects_a_built_optimizer():
    model = small_cnn((8, 8, 1), 3, width=4)
    compile_classifier(model)
    unfreeze(model, from_layer="classifier")
    x, y = tiny_data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    groups = [model.get_layer("block3_conv"), model.get_layer("classifier")]
    with pytest.raises(ValueError, match="already built"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[GradualUnfreezing(groups)])
    freeze(model)
    compile_classifier(model)
    with pytest.raises(ValueError, match="model.trainable"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[GradualUnfreezing(groups)])


def test_gradual_unfreezing_resumes_with_the_optimizer_it_built():
    model = small_cnn((8, 8, 1), 3, width=4)
    compile_classifier(model)
    x, y = tiny_data()
    groups = [model.get_layer("block3_conv"), model.get_layer("classifier")]
    callback = GradualUnfreezing(groups)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    steps = int(model.optimizer.iterations)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    assert int(model.optimizer.iterations) == 2 * steps
    # another callback cannot know what that optimizer tracks
    with pytest.raises(ValueError, match="already built"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[GradualUnfreezing(groups)])


def test_gradual_unfreezing_bad_arguments_raise():
    with pytest.raises(ValueError, match="groups"):
        GradualUnfreezing([])
    with pytest.raises(TypeError, match="groups"):
        GradualUnfreezing(["block1"])
    with pytest.raises(ValueError, match="epochs_per_group"):
        GradualUnfreezing([keras.layers.Dense(1)], epochs_per_group=0)
    with pytest.raises(ValueError, match="epochs_per_group"):
        GradualUnfreezing([keras.layers.Dense(1)], epochs_per_group=True)
    with pytest.raises(ValueError, match="empty group at index 1"):
        GradualUnfreezing([keras.layers.Dense(1), []])
    with pytest.raises(TypeError, match="train_batchnorm"):
        GradualUnfreezing([keras.layers.Dense(1)], train_batchnorm=1)


# --- data and the pretrained network -----------------------------------------


def test_scatter_on_canvas_places_images():
    images = np.ones((5, 4, 4, 1), "float32")
    canvas = scatter_on_canvas(images, 10, noise=0.2, seed=0)
    assert canvas.shape == (5, 10, 10, 1)
    assert np.all((canvas.reshape(5, -1) == 1.0).sum(axis=1) == 16)
    assert canvas.max() <= 1.0 and canvas.min() >= 0.0
    np.testing.assert_array_equal(
        canvas, scatter_on_canvas(images, 10, noise=0.2, seed=0))
    with pytest.raises(ValueError, match="canvas_size"):
        scatter_on_canvas(images, 3)
    with pytest.raises(ValueError, match="noise"):
        scatter_on_canvas(images, 10, noise=2.0)
    with pytest.raises(ValueError, match="images"):
        scatter_on_canvas(np.ones((5, 4, 4)), 10)
    with pytest.raises(ValueError, match="canvas_size"):
        scatter_on_canvas(np.ones((5, 1, 1, 1)), True)
    for noise in (float("nan"), True, -0.1):
        with pytest.raises(ValueError, match="noise"):
            scatter_on_canvas(images, 10, noise=noise)
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            scatter_on_canvas(images, 10, seed=seed)
    with pytest.raises(ValueError, match="finite"):
        scatter_on_canvas(np.full((1, 4, 4, 1), np.nan), 10)
    with pytest.raises(ValueError, match="images=None"):
        scatter_on_canvas(None, 10)


def test_transfer_digits_splits_classes():
    data = transfer_digits(digit_size=8, canvas_size=12, source_copies=2)
    source_x, source_y = data["source_train"]
    target_x, target_y = data["target_train"]
    assert source_x.shape[1:] == target_x.shape[1:] == (12, 12, 1)
    for _, labels in data.values():
        assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    plain = transfer_digits(digit_size=8)
    assert len(source_y) == 2 * len(plain["source_train"][1])
    assert len(target_y) == len(plain["target_train"][1])
    with pytest.raises(ValueError, match="source_copies"):
        transfer_digits(source_copies=0)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(digit_size=0), "`digit_size`"),
     (dict(digit_size=True), "`digit_size`"),
     (dict(digit_size=8, canvas_size=4), "`canvas_size`"),
     (dict(canvas_size=True), "`canvas_size`"),
     (dict(canvas_size=24, noise=float("nan")), "`noise`"),
     (dict(source_copies=True), "`source_copies`"),
     (dict(seed=-1), "`seed`"),
     (dict(seed=0.5), "`seed`")],
)
def test_transfer_digits_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        transfer_digits(**kwargs)


def test_small_cnn_and_compile_classifier_bad_arguments_raise():
    for shape in ((8, 8), (8, 0, 1), (8, 8, True), 8):
        with pytest.raises(ValueError, match="input_shape"):
            small_cnn(shape, 3)
    for name, kwargs in (("num_classes", dict(num_classes=0)),
                         ("num_classes", dict(num_classes=True)),
                         ("width", dict(width=0)),
                         ("width", dict(width=2.0))):
        arguments = dict(input_shape=(8, 8, 1), num_classes=3)
        arguments.update(kwargs)
        with pytest.raises(ValueError, match=name):
            small_cnn(**arguments)
    with pytest.raises(TypeError, match="name"):
        small_cnn((8, 8, 1), 3, name=3)
    model = small_cnn((8, 8, 1), 3, width=2)
    with pytest.raises(TypeError, match="model='cnn'"):
        compile_classifier("cnn")
    for rate in (0.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="learning_rate"):
            compile_classifier(model, learning_rate=rate)
    with pytest.raises(TypeError, match="optimizer"):
        compile_classifier(model, optimizer="adam")


def test_cache_directory_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLBOOK_CACHE", str(tmp_path / "env"))
    assert cache_directory() == str(tmp_path / "env")
    assert cache_directory(tmp_path / "arg") == str(tmp_path / "arg")
    monkeypatch.delenv("MTLBOOK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_directory() == os.path.join(str(tmp_path / "xdg"), "mtlbook")


def test_cache_path_that_is_a_file_raises(tmp_path, monkeypatch):
    a_file = tmp_path / "cache.txt"
    a_file.write_text("not a folder")
    monkeypatch.setenv("MTLBOOK_CACHE", str(a_file))
    with pytest.raises(ValueError, match=r"`\$MTLBOOK_CACHE` must be a folder"):
        pretrained_digits_cnn(**TINY)
    with pytest.raises(ValueError, match="`cache_dir` must be a folder"):
        cache_directory(a_file)
    with pytest.raises(TypeError, match="cache_dir"):
        cache_directory(3)


TINY = dict(digit_size=8, canvas_size=None, source_copies=1, width=4,
            epochs=1, batch_size=128)


def test_pretrained_digits_cnn_is_cached_and_deterministic(tmp_path):
    first = pretrained_digits_cnn(cache_dir=tmp_path / "a", **TINY)
    files = list((tmp_path / "a").iterdir())
    # the model and its fingerprint, nothing else
    assert sorted(f.suffix for f in files) == [".json", ".keras"]
    files = [f for f in files if f.suffix == ".keras"]
    stamp = files[0].stat().st_mtime_ns
    again = pretrained_digits_cnn(cache_dir=tmp_path / "a", **TINY)
    assert files[0].stat().st_mtime_ns == stamp  # loaded, not retrained
    other = pretrained_digits_cnn(cache_dir=tmp_path / "b", **TINY)
    for a, b, c in zip(first.get_weights(), again.get_weights(),
                       other.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert first.output_shape == (None, 5)


def test_pretrained_digits_cnn_rebuilds_a_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLBOOK_CACHE", str(tmp_path))
    model = pretrained_digits_cnn(**TINY)
    (path,) = tmp_path.glob("*.keras")
    path.write_bytes(b"half-written")
    (tmp_path / ".digits_cnn-leftover.keras").write_bytes(b"junk")
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = pretrained_digits_cnn(**TINY)
    for a, b in zip(model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)
    keras.saving.load_model(path)  # the cache file is whole again


def test_pretrained_digits_cnn_rebuilds_a_foreign_model(tmp_path):
    model = pretrained_digits_cnn(cache_dir=tmp_path, **TINY)
    (path,) = tmp_path.glob("*.keras")
    # another loadable model under the cache name, same shapes even
    foreign = small_cnn((8, 8, 1), 5, width=2, name="digits_cnn")
    foreign.save(path)
    with pytest.warns(UserWarning, match="another model saved under"):
        rebuilt = pretrained_digits_cnn(cache_dir=tmp_path, **TINY)
    assert len(rebuilt.get_weights()) == len(model.get_weights())
    for a, b in zip(model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a file without its fingerprint (an older version's): rebuilt quietly
    (fingerprint,) = tmp_path.glob("*.json")
    fingerprint.unlink()
    foreign.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        again = pretrained_digits_cnn(cache_dir=tmp_path, **TINY)
    assert fingerprint.exists()
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    # an unreadable fingerprint: rebuilt, with a warning
    fingerprint.write_text("{not json")
    with pytest.warns(UserWarning, match="fingerprint .* is unreadable"):
        pretrained_digits_cnn(cache_dir=tmp_path, **TINY)


def test_pretrained_digits_cnn_unwritable_cache_returns_the_model(
        tmp_path, monkeypatch):
    import tempfile

    reference = pretrained_digits_cnn(cache_dir=tmp_path / "a", **TINY)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.warns(UserWarning, match="Could not write .*PermissionError"):
        model = pretrained_digits_cnn(cache_dir=tmp_path / "b", **TINY)
    assert not list((tmp_path / "b").glob("*.keras"))
    assert model.output_shape == (None, 5)
    for a, b in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pretrained_digits_cnn_folder_at_the_cache_path_raises(tmp_path):
    pretrained_digits_cnn(cache_dir=tmp_path, **TINY)
    (path,) = tmp_path.glob("*.keras")
    path.unlink()
    path.mkdir()
    with pytest.raises(ValueError, match="must not be a folder"):
        pretrained_digits_cnn(cache_dir=tmp_path, **TINY)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(epochs=0), "epochs"), (dict(epochs=True), "epochs"),
     (dict(width=2.0), "width"), (dict(batch_size=-1), "batch_size"),
     (dict(digit_size=0), "digit_size"), (dict(noise=float("nan")), "noise"),
     (dict(seed=-1), "seed"), (dict(canvas_size=4), "canvas_size")],
)
def test_pretrained_digits_cnn_bad_arguments_raise(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        pretrained_digits_cnn(cache_dir=tmp_path, **kwargs)
    with pytest.raises(TypeError, match="overwrite"):
        pretrained_digits_cnn(cache_dir=tmp_path, overwrite="yes")
    assert not list(tmp_path.iterdir())  # nothing trained or written


# --- the figure used by the fine-tuning chapter ------------------------------


def test_plot_curves_with_spread():
    from mtlbook.plot import plot_curves_with_spread

    figure = plot_curves_with_spread(
        {"scratch": ([1, 5, 20], [0.3, 0.5, 0.8], [0.05, 0.1, 0.05]),
         "transfer": ([1, 5, 20], [0.5, 0.6, 0.8], [0.05, 0.05, 0.02])},
        "labels per class", "accuracy", title="t")
    axis = figure.axes[0]
    assert len(axis.lines) == 2 and axis.get_xscale() == "log"
    with pytest.raises(ValueError, match="curves"):
        plot_curves_with_spread({}, "x", "y")
    with pytest.raises(ValueError, match="curves"):
        plot_curves_with_spread({"a": ([1, 2], [0.1])}, "x", "y")
