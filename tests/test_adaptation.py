"""Tests of mtlbook.adaptation and mtlbook.data.make_shifted_moons."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlbook.adaptation import (
    DomainAdversarialTrainer,
    domain_adversarial_model,
)
from mtlbook.data import make_shifted_moons
from mtlbook.data.moons import rotate
from mtlbook.layers.gradient_reversal import GradientReversal, dann_lambda

SPLITS = ("source_train", "source_test", "target_train", "target_test")


# --- make_shifted_moons ---------------------------------------------------

def test_moons_shapes_labels_and_split_sizes():
    data = make_shifted_moons(n_per_domain=100, test_fraction=0.3, seed=0)
    assert set(data) == set(SPLITS)
    for name in SPLITS:
        x, y = data[name]
        assert x.dtype == np.float32 and x.shape == (len(y), 2)
        assert y.dtype == np.int32 and set(np.unique(y)) == {0, 1}
    for domain in ("source", "target"):
        train, test = data[f"{domain}_train"], data[f"{domain}_test"]
        assert len(train.y) + len(test.y) == 100 and len(test.y) == 30
        assert np.sum(test.y == 0) == 15  # stratified


def test_moons_deterministic_and_seed_dependent():
    a = make_shifted_moons(n_per_domain=60, seed=3)
    b = make_shifted_moons(n_per_domain=60, seed=3)
    c = make_shifted_moons(n_per_domain=60, seed=4)
    for name in SPLITS:
        np.testing.assert_array_equal(a[name].x, b[name].x)
        np.testing.assert_array_equal(a[name].y, b[name].y)
    assert not np.array_equal(a["target_train"].x, c["target_train"].x)


def test_moons_splits_share_no_point():
    data = make_shifted_moons(n_per_domain=200, noise=0.1, seed=1)
    for domain in ("source", "target"):
        train = {p.tobytes() for p in data[f"{domain}_train"].x}
        test = {p.tobytes() for p in data[f"{domain}_test"].x}
        assert not train & test


def test_rotate_by_hand():
    points = np.array([[1.0, 0.0], [2.0, 1.0]])
    np.testing.assert_allclose(rotate(points, 90.0, (0.0, 0.0)),
                               [[0.0, 1.0], [-1.0, 2.0]], atol=1e-6)
    np.testing.assert_allclose(rotate(points, 180.0, (1.0, 0.0)),
                               [[1.0, 0.0], [0.0, -1.0]], atol=1e-6)


def test_target_is_moons_rotated_about_the_source_mean():
    # Without noise, make_moons puts class 0 on the unit circle around
    # (0, 0) and class 1 on the unit circle around (1, 0.5). Rotating the
    # target back about the source mean must put it on those circles.
    data = make_shifted_moons(n_per_domain=80, angle_degrees=35.0, noise=0.0)
    source = np.concatenate([data["source_train"].x, data["source_test"].x])
    x = np.concatenate([data["target_train"].x, data["target_test"].x])
    y = np.concatenate([data["target_train"].y, data["target_test"].y])
    back = rotate(x, -35.0, source.mean(axis=0))
    centres = np.where(y[:, None] == 0, [0.0, 0.0], [1.0, 0.5])
    np.testing.assert_allclose(np.linalg.norm(back - centres, axis=1), 1.0,
                               atol=1e-4)
    # and the unrotated target is not on them
    assert np.abs(np.linalg.norm(x - centres, axis=1) - 1.0).max() > 0.1


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_per_domain": 3}, ValueError, "n_per_domain"),
    ({"n_per_domain": 10.5}, ValueError, "n_per_domain"),
    ({"angle_degrees": "35"}, TypeError, "angle_degrees"),
    ({"angle_degrees": float("nan")}, TypeError, "angle_degrees"),
    ({"noise": -0.1}, ValueError, "noise"),
    ({"test_fraction": 0.0}, ValueError, "test_fraction"),
    ({"test_fraction": 1.0}, ValueError, "test_fraction"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_moons_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_shifted_moons(**kwargs)


# --- domain_adversarial_model ---------------------------------------------

def features(width=8, inputs=2):
    return keras.Sequential([keras.Input((inputs,)),
                             keras.layers.Dense(width, activation="relu")],
                            name="features")


def make_model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return domain_adversarial_model(features(), 3, **kwargs)


def test_model_outputs_and_layers():
    model = make_model(domain_units=(5, 4), lambda_=0.3)
    out = model(np.zeros((7, 2), "float32"))
    assert set(out) == {"label", "domain"}
    assert tuple(out["label"].shape) == (7, 3)
    assert tuple(out["domain"].shape) == (7, 1)
    reversal = model.get_layer("reversal")
    assert isinstance(reversal, GradientReversal)
    assert float(reversal.lambda_.numpy()) == pytest.approx(0.3)
    # features 2*8+8, label 8*3+3, domain 8*5+5, 5*4+4, 4*1+1
    assert model.count_params() == 24 + 27 + 45 + 24 + 5 + 1  # + lambda


def test_linear_domain_head():
    model = make_model(domain_units=())
    assert model.get_layer("domain").kernel.shape == (8, 1)


def test_model_save_and_load(tmp_path):
    model = make_model()
    model.get_layer("reversal").lambda_.assign(0.7)
    model.save(tmp_path / "dann.keras")
    restored = keras.saving.load_model(tmp_path / "dann.keras")
    x = np.random.default_rng(0).normal(size=(5, 2)).astype("float32")
    for key in ("label", "domain"):
        np.testing.assert_allclose(restored(x)[key], model(x)[key], rtol=1e-6)
    restored_lambda = restored.get_layer("reversal").lambda_.numpy()
    assert float(restored_lambda) == pytest.approx(0.7)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"feature_extractor": keras.layers.Dense(3)}, TypeError,
     "feature_extractor"),
    ({"feature_extractor": "features"}, TypeError,
     "feature_extractor='features'"),
    ({"num_classes": 1}, ValueError, "num_classes"),
    ({"num_classes": True}, ValueError, "num_classes"),
    ({"domain_units": (4, 0)}, ValueError, "domain_units"),
    ({"domain_units": (4.5,)}, ValueError, "domain_units"),
    ({"domain_units": (True, 4)}, ValueError, "domain_units"),
    ({"domain_units": 32}, ValueError, "domain_units"),
    ({"domain_units": "32"}, ValueError, "domain_units"),
    ({"num_classes": 2.0}, ValueError, "num_classes"),
    ({"lambda_": float("nan")}, ValueError, "lambda_"),
    ({"lambda_": -1.0}, ValueError, "lambda_"),
    ({"feature_extractor": keras.Sequential([keras.layers.Dense(3)])},
     ValueError, "feature_extractor"),
])
def test_model_rejects_bad_arguments(kwargs, error, match):
    arguments = {"feature_extractor": features(), "num_classes": 2, **kwargs}
    with pytest.raises(error, match=match):
        domain_adversarial_model(**arguments)


def test_model_rejects_a_feature_extractor_with_two_inputs():
    a, b = keras.Input((2,)), keras.Input((3,))
    two = keras.Model([a, b], keras.layers.Concatenate()([a, b]))
    with pytest.raises(ValueError, match="one input"):
        domain_adversarial_model(two, 2)


def test_model_rejects_non_vector_features():
    images = keras.Sequential([keras.Input((4, 4, 1)),
                               keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="feature_extractor"):
        domain_adversarial_model(images, 2)


# --- DomainAdversarialTrainer ---------------------------------------------

def toy_data(n=40):
    rng = np.random.default_rng(0)
    source_x = rng.normal(size=(n, 2)).astype("float32")
    source_y = (source_x[:, 0] > 0).astype("int32")
    target_x = (rng.normal(size=(n, 2)) + 2.0).astype("float32")
    return source_x, source_y, target_x


def weights_of(model, prefix):
    return [w.numpy() for layer in model.layers if layer.name.startswith(prefix)
            for w in layer.weights]


def test_lambda_zero_is_source_only_training():
    # With lambda = 0 no gradient reaches the features from the domain head,
    # so features and label head follow exactly the source-only path
    # (domain_weight = 0), while the domain head itself learns.
    runs = {}
    for name, weight in (("dann", 1.0), ("source_only", 0.0)):
        model = make_model(seed=1)
        trainer = DomainAdversarialTrainer(model, keras.optimizers.SGD(0.1),
                                           domain_weight=weight)
        trainer.fit(*toy_data(), steps=5, lambda_max=0.0)
        runs[name] = model
    for prefix in ("features", "label"):
        for a, b in zip(weights_of(runs["dann"], prefix),
                        weights_of(runs["source_only"], prefix)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(weights_of(runs["dann"], "domain")[0],
                           weights_of(runs["source_only"], "domain")[0])


def test_one_step_moves_features_against_the_domain_gradient():
    # With plain SGD one step changes the features by
    # -lr * (grad label_loss - lambda * grad domain_loss): the domain term
    # is reversed. The domain gradient is computed here without the layer.
    source_x, source_y, target_x = toy_data()
    inputs = np.concatenate([source_x, target_x])
    domains = np.concatenate([np.zeros((40, 1)), np.ones((40, 1))])
    model = make_model(seed=0)
    extractor = model.get_layer("features")
    with tf.GradientTape() as tape:
        hidden = extractor(inputs)
        for name in ("domain_hidden0", "domain"):
            hidden = model.get_layer(name)(hidden)
        loss = tf.reduce_mean(keras.losses.binary_crossentropy(
            domains, hidden, from_logits=True))
    domain_gradient = tape.gradient(loss, extractor.trainable_variables)
    updates = {}
    for lambda_ in (0.0, 1.5):
        model = make_model(seed=0)
        start = [w.numpy() for w in model.get_layer("features").weights]
        trainer = DomainAdversarialTrainer(model, keras.optimizers.SGD(0.1))
        trainer.train_step(source_x, source_y, target_x, lambda_)
        updates[lambda_] = [w.numpy() - s for w, s in
                            zip(model.get_layer("features").weights, start)]
    for gradient, with_reversal, without in zip(
            domain_gradient, updates[1.5], updates[0.0]):
        np.testing.assert_allclose(with_reversal - without,
                                   0.1 * 1.5 * gradient.numpy(), atol=1e-6)
    assert max(np.abs(g.numpy()).max() for g in domain_gradient) > 1e-3


def test_fit_history_follows_the_schedule_and_is_deterministic():
    histories, weights = [], []
    for _ in range(2):
        model = make_model(seed=2)
        trainer = DomainAdversarialTrainer(model, keras.optimizers.Adam(1e-2))
        histories.append(trainer.fit(*toy_data(), steps=10, lambda_max=0.5,
                                     batch_size=8, log_every=4, seed=3))
        weights.append(model.get_weights())
    history = histories[0]
    assert history["step"] == [3, 7, 9]
    assert history["lambda"] == pytest.approx(
        [dann_lambda(s / 10, 10.0, 0.5) for s in (3, 7, 9)])
    assert float(model.get_layer("reversal").lambda_.numpy()) == pytest.approx(
        dann_lambda(0.9, 10.0, 0.5))
    assert all(0.0 <= a <= 1.0 for a in history["domain_accuracy"])
    assert histories[0] == histories[1]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_train_step_and_reset():
    model = make_model(seed=0)
    start = model.get_weights()
    trainer = DomainAdversarialTrainer(model, keras.optimizers.Adam(1e-2))
    source_x, source_y, target_x = toy_data()
    first = trainer.train_step(source_x, source_y, target_x, 0.5)
    assert set(first) == {"label_loss", "domain_loss", "domain_accuracy"}
    assert not np.allclose(start[0], model.get_weights()[0])
    trainer.reset(start)
    assert trainer.train_step(source_x, source_y, target_x, 0.5) == first


@pytest.mark.parametrize("weights", [[np.zeros(2)], "weights", None])
def test_reset_rejects_weights_of_another_model(weights):
    trainer = DomainAdversarialTrainer(make_model(), keras.optimizers.SGD())
    with pytest.raises(ValueError, match="`weights` must be a list of"):
        trainer.reset(weights)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"model": "dann"}, TypeError, "model='dann'"),
    ({"model": features()}, ValueError, "model"),
    ({"optimizer": "adam"}, TypeError, "optimizer='adam'"),
    ({"domain_weight": -1.0}, ValueError, "domain_weight"),
    ({"domain_weight": float("nan")}, ValueError, "domain_weight"),
    ({"domain_weight": float("inf")}, ValueError, "domain_weight"),
    ({"domain_weight": True}, ValueError, "domain_weight"),
])
def test_trainer_rejects_bad_arguments(kwargs, error, match):
    arguments = {"model": make_model(), "optimizer": keras.optimizers.SGD(),
                 **kwargs}
    with pytest.raises(error, match=match):
        DomainAdversarialTrainer(**arguments)


def test_trainer_rejects_a_model_without_label_and_domain_outputs():
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(4)(inputs)
    domain = keras.layers.Dense(1)(GradientReversal()(hidden))
    model = keras.Model(inputs, [keras.layers.Dense(3)(hidden), domain])
    with pytest.raises(ValueError, match="'label' and 'domain'"):
        DomainAdversarialTrainer(model, keras.optimizers.SGD())


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"),
    ({"steps": True}, "steps"),
    ({"log_every": 0}, "log_every"),
    ({"batch_size": 0}, "batch_size"),
    ({"lambda_max": -1.0}, "lambda_max"),
    ({"source_y": np.zeros(3, "int32")}, "source_x"),
    ({"steps": 2.5}, "steps"),
    ({"log_every": True}, "log_every"),
    ({"batch_size": 8.0}, "batch_size"),
    ({"lambda_max": float("nan")}, "lambda_max"),
    ({"lambda_max": float("inf")}, "lambda_max"),
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": float("nan")}, "gamma"),
    ({"seed": -1}, "seed"),
    ({"seed": True}, "seed"),
    ({"seed": 1.5}, "seed"),
    # labels the model cannot have (3 classes): an error, not a truncation
    # or a NaN loss
    ({"source_y": np.full(40, 3)}, "source_y.*\\[0, 3\\)"),
    ({"source_y": np.full(40, -1)}, "source_y"),
    ({"source_y": np.full(40, 0.5)}, "source_y"),
    ({"source_y": np.eye(3)[np.zeros(40, int)]}, "source_y"),
    ({"source_y": np.array(["a"] * 40)}, "source_y"),
    ({"source_x": np.full((40, 2), np.nan)}, "source_x.*finite"),
    ({"target_x": np.full((40, 2), np.inf)}, "target_x.*finite"),
    ({"target_x": np.zeros((40, 3))}, "target_x.*shape"),
    ({"target_x": np.zeros((0, 2))}, "target_x.*non-empty"),
    ({"source_x": np.zeros((40, 2, 1))}, "source_x.*shape"),
])
def test_fit_rejects_bad_arguments(kwargs, match):
    source_x, source_y, target_x = toy_data()
    arguments = {"source_x": source_x, "source_y": source_y,
                 "target_x": target_x, "steps": 2, **kwargs}
    trainer = DomainAdversarialTrainer(make_model(), keras.optimizers.SGD())
    with pytest.raises(ValueError, match=match):
        trainer.fit(**arguments)


def test_fit_accepts_float_and_column_labels_of_whole_numbers():
    source_x, source_y, target_x = toy_data()
    histories = []
    for labels in (source_y, source_y.astype("float64"), source_y[:, None]):
        trainer = DomainAdversarialTrainer(make_model(seed=4),
                                           keras.optimizers.SGD(0.1))
        histories.append(trainer.fit(source_x, labels, target_x, steps=2))
    assert histories[0] == histories[1] == histories[2]


@pytest.mark.parametrize("kwargs, match", [
    ({"lambda_": -0.5}, "lambda_"),
    ({"lambda_": float("nan")}, "lambda_"),
    ({"lambda_": True}, "lambda_"),
    ({"source_y": np.full(40, 7)}, "source_y"),
    ({"target_x": np.full((40, 2), np.nan)}, "target_x"),
])
def test_train_step_rejects_bad_arguments(kwargs, match):
    source_x, source_y, target_x = toy_data()
    arguments = {"source_x": source_x, "source_y": source_y,
                 "target_x": target_x, "lambda_": 0.5, **kwargs}
    model = make_model()
    start = model.get_weights()
    trainer = DomainAdversarialTrainer(model, keras.optimizers.SGD())
    with pytest.raises(ValueError, match=match):
        trainer.train_step(**arguments)
    for a, b in zip(start, model.get_weights()):  # nothing was trained
        np.testing.assert_array_equal(a, b)
