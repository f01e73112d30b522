"""Tests of mtlbook.distillation: soft targets and teacher annealing."""

import keras
import numpy as np
import pytest
from keras import ops

from mtlbook.distillation import (
    DistillationLoss,
    annealed_targets,
    distillation_targets,
    soft_target_loss,
)

TEACHER = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], "float32")
STUDENT = np.array([[0.0, 1.0, 1.0], [1.0, -1.0, 0.0]], "float32")


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _kl(teacher, student):
    p, q = _softmax(teacher), _softmax(student)
    return np.sum(p * np.log(p / q), axis=-1)


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(value))


# --- soft_target_loss -------------------------------------------------------

def test_temperature_one_is_the_kl_divergence_by_hand():
    # row 0: p = softmax(1, 2, .5) = (.2312, .6285, .1402),
    # q = softmax(0, 1, 1) = (.1554, .4223, .4223); KL = 0.18726
    np.testing.assert_allclose(_kl(TEACHER[:1], STUDENT[:1]), [0.18726],
                               atol=1e-5)
    loss = soft_target_loss(TEACHER, STUDENT, temperature=1.0)
    np.testing.assert_allclose(_numpy(loss), _kl(TEACHER, STUDENT).mean(),
                               rtol=1e-5)


def test_temperature_scales_logits_and_multiplies_by_t_squared():
    loss = soft_target_loss(TEACHER, STUDENT, temperature=3.0)
    expected = 9.0 * _kl(TEACHER / 3.0, STUDENT / 3.0).mean()
    np.testing.assert_allclose(_numpy(loss), expected, rtol=1e-5)


def test_equal_logits_give_zero_loss():
    loss = soft_target_loss(TEACHER, TEACHER + 5.0, temperature=2.0)
    np.testing.assert_allclose(_numpy(loss), 0.0, atol=1e-6)


@pytest.mark.tensorflow
def test_gradient_is_t_times_the_softmax_difference():
    import tensorflow as tf

    student = tf.Variable(STUDENT)
    with tf.GradientTape() as tape:
        loss = soft_target_loss(TEACHER, student, temperature=4.0)
    gradient = tape.gradient(loss, student).numpy()
    # d/ds [T^2 KL(p_T || q_T)] = T^2 (q_T - p_T) / T, over a batch of 2
    expected = 4.0 * (_softmax(STUDENT / 4) - _softmax(TEACHER / 4)) / 2
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.tensorflow
def test_t_squared_keeps_the_gradient_scale_at_high_temperature():
    # For large T the gradient tends to ((s - mean s) - (t - mean t)) / N
    # (Hinton et al., 2015): independent of T thanks to the T^2 factor.
    import tensorflow as tf

    teacher, student = TEACHER[:1], STUDENT[:1]
    limit = ((student - student.mean()) - (teacher - teacher.mean())) / 3
    for temperature in (50.0, 500.0):
        variable = tf.Variable(student)
        with tf.GradientTape() as tape:
            loss = soft_target_loss(teacher, variable, temperature)
        gradient = tape.gradient(loss, variable).numpy()
        np.testing.assert_allclose(gradient, limit, atol=0.02 * 50
                                   / temperature)


@pytest.mark.tensorflow
def test_no_gradient_reaches_the_teacher():
    import tensorflow as tf

    teacher = tf.Variable(TEACHER)
    with tf.GradientTape() as tape:
        loss = soft_target_loss(teacher, STUDENT, temperature=2.0)
    assert tape.gradient(loss, teacher) is None


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), True, "2"])
def test_soft_target_loss_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(TEACHER, STUDENT, temperature=temperature)


def test_soft_target_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="teacher_logits.*2-D"):
        soft_target_loss(TEACHER[0], STUDENT[0])
    with pytest.raises(ValueError, match="same shape.*Received"):
        soft_target_loss(TEACHER, STUDENT[:, :2])


# --- annealed_targets -------------------------------------------------------

PROBABILITIES = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
LABELS = np.array([1, 2])


def test_annealing_endpoints_and_middle_by_hand():
    start = annealed_targets(LABELS, PROBABILITIES, 0, 10)
    np.testing.assert_allclose(start, PROBABILITIES)
    end = annealed_targets(LABELS, PROBABILITIES, 10, 10)
    np.testing.assert_allclose(end, [[0, 1, 0], [0, 0, 1]])
    middle = annealed_targets(LABELS, PROBABILITIES, 1, 4)  # lambda = 0.25
    np.testing.assert_allclose(
        middle, [[0.525, 0.4, 0.075], [0.075, 0.075, 0.85]], rtol=1e-6
    )
    assert middle.dtype == np.float32
    np.testing.assert_allclose(middle.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(step=-1), "step"),
        (dict(step=11), "step.*total_steps"),
        (dict(step=1.5), "step"),
        (dict(total_steps=0), "total_steps"),
        (dict(total_steps=True), "total_steps"),
        (dict(labels=np.array([0, 3])), "labels"),
        (dict(labels=np.array([0.0, 1.0])), "labels"),
        (dict(labels=np.array([0, 1, 2])), "same number of rows"),
        (dict(teacher_probabilities=np.ones((2, 3))), "probabilities"),
        (dict(teacher_probabilities=np.ones(3)), "teacher_probabilities"),
        (dict(teacher_probabilities="x"), "teacher_probabilities"),
    ],
)
def test_annealed_targets_rejects_bad_input(kwargs, match):
    arguments = dict(labels=LABELS, teacher_probabilities=PROBABILITIES,
                     step=1, total_steps=10)
    arguments.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        annealed_targets(**arguments)


# --- distillation_targets and DistillationLoss -----------------------------

def test_distillation_targets_packs_labels_then_logits():
    packed = distillation_targets(np.array([2, 0]), TEACHER)
    np.testing.assert_array_equal(
        packed, [[0, 0, 1, 1.0, 2.0, 0.5], [1, 0, 0, 0.0, 0.0, 3.0]]
    )
    assert packed.dtype == np.float32


def test_distillation_targets_rejects_bad_input():
    with pytest.raises(ValueError, match="same number of rows"):
        distillation_targets(np.array([0]), TEACHER)
    with pytest.raises(ValueError, match="labels"):
        distillation_targets(np.array([0, 5]), TEACHER)
    with pytest.raises(ValueError, match="teacher_logits.*NaN"):
        distillation_targets(np.array([0, 1]), TEACHER * np.nan)


def _cross_entropy(labels, logits):
    return -np.log(_softmax(logits)[np.arange(len(labels)), labels])


@pytest.mark.parametrize("label_weight", [0.0, 0.3, 1.0])
def test_distillation_loss_by_hand(label_weight):
    labels = np.array([2, 0])
    loss = DistillationLoss(temperature=2.0, label_weight=label_weight)
    value = loss(distillation_targets(labels, TEACHER), STUDENT)
    soft = 4.0 * _kl(TEACHER / 2, STUDENT / 2)
    hard = _cross_entropy(labels, STUDENT)
    expected = np.mean(label_weight * hard + (1 - label_weight) * soft)
    np.testing.assert_allclose(_numpy(value), expected, rtol=1e-5)
    if label_weight == 0.0:
        np.testing.assert_allclose(
            _numpy(value),
            _numpy(soft_target_loss(TEACHER, STUDENT, temperature=2.0)),
            rtol=1e-6,
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(label_weight=1.5), "label_weight"),
        (dict(label_weight=-0.1), "label_weight"),
        (dict(label_weight="0.5"), "label_weight"),
    ],
)
def test_distillation_loss_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match + ".*Received"):
        DistillationLoss(**kwargs)


def test_distillation_loss_config_round_trip():
    loss = DistillationLoss(temperature=3.0, label_weight=0.25)
    restored = DistillationLoss.from_config(loss.get_config())
    assert (restored.temperature, restored.label_weight) == (3.0, 0.25)
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(again, DistillationLoss)
    assert again.temperature == 3.0 and again.label_weight == 0.25


def _student():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, {
        "a": keras.layers.Dense(3, name="a")(hidden),
        "b": keras.layers.Dense(2, name="b")(hidden),
    })


def test_multi_task_student_fits_and_survives_a_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    teacher_logits = {"a": rng.normal(size=(32, 3)),
                      "b": rng.normal(size=(32, 2))}
    y = {"a": rng.integers(0, 3, 32), "b": rng.integers(0, 2, 32)}
    targets = {task: distillation_targets(y[task], teacher_logits[task])
               for task in y}
    student = _student()
    student.compile(
        keras.optimizers.Adam(1e-2),
        loss={"a": DistillationLoss(2.0, 0.5), "b": DistillationLoss(3.0, 0)},
    )
    history = student.fit(x, targets, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "student.keras"
    student.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0)["a"], student.predict(x, verbose=0)["a"],
        rtol=1e-5, atol=1e-6,
    )
    losses = restored.loss
    losses = losses.values() if isinstance(losses, dict) else losses
    restored_losses = sorted(
        (loss.temperature, loss.label_weight) for loss in losses
    )
    assert restored_losses == [(2.0, 0.5), (3.0, 0.0)]
    np.testing.assert_allclose(
        restored.evaluate(x, targets, verbose=0),
        student.evaluate(x, targets, verbose=0), rtol=1e-5,
    )


@pytest.mark.tensorflow
def test_soft_target_loss_traces_with_an_unknown_batch_size():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, 3)),
                                  tf.TensorSpec((2, 3))])
    def traced(teacher, student):
        return soft_target_loss(teacher, student, temperature=2.0)

    np.testing.assert_allclose(
        traced(TEACHER, STUDENT).numpy(),
        4.0 * _kl(TEACHER / 2, STUDENT / 2).mean(), rtol=1e-5,
    )
