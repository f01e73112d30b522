"""Loss weightings given bad losses or bad hyper-parameters (issue 15).

GradNorm takes each task's reference loss from its first finite, positive
loss, and a step updates only the tasks it can use; DWA leaves non-finite
steps and unusable epochs out. Their numerics on ordinary losses are
checked, bit for bit, against the update as it was written before these
guards (`original_gradnorm_step`, `original_dwa_epoch` below). Every
hyper-parameter rejects NaN, inf, bools and out-of-range values with an
error that names it.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from mtlbook.weighting import (
    DynamicWeightAverage, EqualWeighting, GradNorm, StaticWeighting,
    UncertaintyWeighting, dwa_weights, gradnorm_weight_gradient,
)

INF, NAN = float("inf"), float("nan")


def numpy(x):
    return ops.convert_to_numpy(x)


def gradnorm(num_tasks=2, **kwargs):
    weighting = GradNorm(**kwargs)
    weighting.set_tasks([f"t{i}" for i in range(num_tasks)])
    return weighting


def dwa(num_tasks=2, **kwargs):
    weighting = DynamicWeightAverage(**kwargs)
    weighting.set_tasks([f"t{i}" for i in range(num_tasks)])
    return weighting


# -- the updates as they were before the guards, to check the numerics --

def original_gradnorm_step(weights, initial, first, losses, norms, alpha,
                           learning_rate, min_weight):
    """GradNorm's update before the guards: `(new weights, reference)`."""
    losses = ops.convert_to_tensor(losses, "float32")
    norms = ops.convert_to_tensor(norms, "float32")
    initial = losses if first else initial
    ratios = losses / initial
    inverse_rates = ratios / ops.mean(ratios)
    weighted = weights * norms
    target = ops.mean(weighted) * inverse_rates ** alpha
    gradient = ops.sign(weighted - target) * norms
    gradient = gradient / ops.maximum(ops.mean(norms), 1e-20)
    new = ops.maximum(weights - learning_rate * gradient, min_weight)
    new = new * (weights.shape[0] / ops.sum(new))
    return ops.where(ops.all(ops.isfinite(new)), new, weights), initial


def original_dwa_epoch(history, epochs, mean_losses, temperature):
    """DWA's epoch update before the guards: `(history, epochs, weights)`."""
    history = ops.stack([history[1], mean_losses])
    epochs = epochs + 1
    ratios = history[1] / history[0]
    weights = history.shape[1] * ops.softmax(ratios / temperature)
    return history, epochs, weights if epochs >= 2 else ops.ones_like(
        mean_losses)


@pytest.mark.parametrize("num_tasks,alpha,learning_rate,min_weight", [
    (2, 1.5, 0.025, 1e-3), (3, 0.5, 0.1, 0.0), (4, 1.0, 0.05, 0.2),
])
def test_gradnorm_ordinary_losses_give_the_original_weights(
        num_tasks, alpha, learning_rate, min_weight):
    rng = np.random.default_rng(num_tasks)
    weighting = gradnorm(num_tasks, alpha=alpha, learning_rate=learning_rate,
                         min_weight=min_weight)
    weights = ops.ones((num_tasks,), "float32")
    initial = None
    scale = rng.lognormal(size=num_tasks) * 3
    for step in range(150):
        losses = (scale * np.exp(-step / 50)
                  * rng.lognormal(0, 0.3, num_tasks)).astype("float32")
        norms = rng.lognormal(0, 1, num_tasks).astype("float32")
        weighting.update_step(losses, norms)
        weights, initial = original_gradnorm_step(
            weights, initial, step == 0, losses, norms, alpha,
            learning_rate, min_weight)
        np.testing.assert_array_equal(numpy(weighting.task_weights()),
                                      numpy(weights))
    np.testing.assert_array_equal(numpy(weighting.initial_losses),
                                  numpy(initial))
    assert np.ptp(numpy(weights)) > 0.1  # the weights did move


@pytest.mark.parametrize("bad", [0.0, INF, NAN, -1.0])
def test_gradnorm_reference_is_the_first_finite_positive_loss(bad):
    weighting = gradnorm(alpha=1.0, learning_rate=0.1)
    weighting.update_step([bad, 1.0], [1.0, 3.0])
    # task 0 has no reference yet (stored as 0) and keeps its weight;
    # task 1 alone is balanced with itself: nothing moves
    np.testing.assert_array_equal(numpy(weighting.initial_losses), [0, 1])
    np.testing.assert_array_equal(numpy(weighting.task_weights()), [1, 1])
    weighting.update_step([bad, 1.0], [1.0, 3.0])
    np.testing.assert_array_equal(numpy(weighting.initial_losses), [0, 1])
    weighting.update_step([2.0, 1.0], [1.0, 3.0])
    np.testing.assert_array_equal(numpy(weighting.initial_losses), [2, 1])
    # from here on it is GradNorm started at this step
    fresh = gradnorm(alpha=1.0, learning_rate=0.1)
    fresh.update_step([2.0, 1.0], [1.0, 3.0])
    np.testing.assert_array_equal(numpy(weighting.task_weights()),
                                  numpy(fresh.task_weights()))
    assert not np.allclose(numpy(weighting.task_weights()), 1.0)
    for losses in ([1.5, 0.5], [1.0, 0.4]):
        weighting.update_step(losses, [1.0, 3.0])
        fresh.update_step(losses, [1.0, 3.0])
    np.testing.assert_array_equal(numpy(weighting.task_weights()),
                                  numpy(fresh.task_weights()))
    np.testing.assert_array_equal(numpy(weighting.initial_losses), [2, 1])


@pytest.mark.parametrize("bad", [0.0, INF, NAN])
def test_gradnorm_balanced_tasks_do_not_drift(bad):
    # one task's first loss is bad, then both train at the same rate with
    # the same gradient norms: the weights must stay equal
    weighting = gradnorm(alpha=1.5, learning_rate=0.1)
    weighting.update_step([bad, 2.0], [1.0, 1.0])
    for step in range(50):
        loss = 2.0 * 0.97 ** step
        weighting.update_step([loss, loss], [1.0, 1.0])
    np.testing.assert_allclose(numpy(weighting.task_weights()), [1, 1],
                               rtol=1e-6)


def test_gradnorm_unusable_step_keeps_that_task_weight():
    weighting = gradnorm(num_tasks=3, alpha=1.5, learning_rate=0.1)
    for losses in ([1.0, 2.0, 3.0], [0.8, 1.9, 2.0], [0.5, 1.8, 1.5]):
        weighting.update_step(losses, [1.0, 2.0, 0.5])
    before = numpy(weighting.task_weights())
    reference = numpy(weighting.initial_losses)
    for bad_loss, bad_norm in ((0.0, 1.0), (INF, 1.0), (NAN, 1.0),
                               (0.5, NAN), (0.5, INF)):
        weighting.update_step([bad_loss, 1.7, 1.2], [bad_norm, 2.0, 0.5])
        after = numpy(weighting.task_weights())
        assert np.all(np.isfinite(after))
        assert after[0] == before[0]
        assert not np.allclose(after[1:], before[1:])
        np.testing.assert_allclose(after.sum(), 3.0, rtol=1e-6)
        np.testing.assert_array_equal(numpy(weighting.initial_losses),
                                      reference)
        before = after
    # no usable task at all: nothing changes
    weighting.update_step([NAN, 0.0, INF], [1.0, 2.0, 0.5])
    np.testing.assert_array_equal(numpy(weighting.task_weights()), before)


def test_gradnorm_weight_gradient_active_tasks():
    full = gradnorm_weight_gradient([1.2, 0.8], [1.0, 0.3], [1.0, 1.0],
                                    [2.0, 1.0], alpha=1.0)
    with_idle = gradnorm_weight_gradient(
        [1.2, 0.8, 1.0], [1.0, 0.3, NAN], [1.0, 1.0, 0.0], [2.0, 1.0, INF],
        alpha=1.0, active=[True, True, False])
    np.testing.assert_array_equal(numpy(with_idle), list(numpy(full)) + [0])
    np.testing.assert_array_equal(
        numpy(gradnorm_weight_gradient([1.2, 0.8], [1.0, 0.3], [1.0, 1.0],
                                       [2.0, 1.0], alpha=1.0,
                                       active=[True, True])),
        numpy(full))
    with pytest.raises(ValueError, match="gradient_norms"):
        gradnorm_weight_gradient([1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="active"):
        gradnorm_weight_gradient([1.0, 1.0], [1.0, 1.0], [1.0, 1.0],
                                 [1.0, 1.0], active=[True])
    with pytest.raises(ValueError, match="alpha"):
        gradnorm_weight_gradient([1.0], [1.0], [1.0], [1.0], alpha=NAN)


def test_gradnorm_unset_reference_survives_config_and_weights():
    weighting = gradnorm(alpha=1.0, learning_rate=0.1)
    weighting.update_step([0.0, 1.0], [1.0, 2.0])
    restored = GradNorm.from_config(weighting.get_config())
    restored.set_tasks(["t0", "t1"])
    restored.set_weights(weighting.get_weights())
    np.testing.assert_array_equal(numpy(restored.initial_losses), [0, 1])
    for weighting_ in (weighting, restored):
        weighting_.update_step([3.0, 0.5], [1.0, 2.0])
    np.testing.assert_array_equal(numpy(restored.initial_losses), [3, 1])
    np.testing.assert_array_equal(numpy(restored.task_weights()),
                                  numpy(weighting.task_weights()))


@pytest.mark.tensorflow
def test_gradnorm_in_fit_with_a_masked_first_batch(tmp_path):
    import tensorflow as tf
    from test_training import make_data, make_model

    x, y = make_data()
    mask = np.ones(64, "float32")
    mask[:16] = 0.0  # no labelled example of task a in the first batch
    model = make_model(GradNorm(alpha=1.5, learning_rate=0.05))
    first = model.compute_task_losses(
        {t: v[:16] for t, v in y.items()}, model(x[:16]),
        sample_weight={"a": mask[:16]})
    assert numpy(first)[0] == 0.0  # the reference GradNorm used to keep
    weights = {"a": mask, "b": np.ones(64, "float32")}
    data = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(16)
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    reference = numpy(model.strategy.initial_losses)
    assert np.all(np.isfinite(reference)) and np.all(reference > 0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(numpy(restored.strategy.initial_losses),
                                  reference)
    history = model.fit(data, epochs=2, verbose=0, shuffle=False).history
    weights = np.array([history["a_weight"][-1], history["b_weight"][-1]])
    assert np.all(np.isfinite(weights)) and not np.allclose(weights, 1.0)
    np.testing.assert_allclose(weights.sum(), 2.0, rtol=1e-5)


@pytest.mark.parametrize("losses,norms,name", [
    ([1.0, 2.0, 3.0], [1.0, 1.0], "task_losses"),
    (1.0, [1.0, 1.0], "task_losses"),
    ([[1.0, 2.0]], [1.0, 1.0], "task_losses"),
    ([1.0, 2.0], [1.0], "gradient_norms"),
    ([1.0, 2.0], [[1.0, 1.0]], "gradient_norms"),
    ([1.0, 2.0], None, "gradient_norms"),
])
def test_gradnorm_update_step_shapes(losses, norms, name):
    weighting = gradnorm()
    with pytest.raises(ValueError, match=rf"`{name}`.*Received"):
        weighting.update_step(losses, norms)
    np.testing.assert_array_equal(numpy(weighting.task_weights()), [1, 1])


def test_update_step_before_set_tasks():
    with pytest.raises(ValueError, match="set_tasks"):
        GradNorm().update_step([1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="set_tasks"):
        DynamicWeightAverage().update_step([1.0, 1.0])
    with pytest.raises(ValueError, match="set_tasks"):
        DynamicWeightAverage().update_epoch()
    with pytest.raises(ValueError, match="set_tasks"):
        UncertaintyWeighting().combine_losses([1.0, 1.0])


# -- DWA --

def test_dwa_ordinary_losses_give_the_original_weights():
    rng = np.random.default_rng(0)
    for num_tasks, temperature in ((2, 2.0), (3, 0.5), (5, 7.0)):
        weighting = dwa(num_tasks, temperature=temperature)
        history = ops.ones((2, num_tasks), "float32")
        epochs = 0
        for epoch in range(8):
            losses = (rng.lognormal(0, 0.5, (int(rng.integers(1, 9)),
                                             num_tasks))
                      * np.exp(-epoch / 4)).astype("float32")
            total = ops.zeros((num_tasks,), "float32")
            for step_losses in losses:
                weighting.update_step(step_losses)
                total = total + step_losses
            weighting.update_epoch()
            history, epochs, weights = original_dwa_epoch(
                history, epochs, total / float(len(losses)), temperature)
            np.testing.assert_array_equal(numpy(weighting.task_weights()),
                                          numpy(weights))
            np.testing.assert_array_equal(numpy(weighting.loss_history),
                                          numpy(history))


@pytest.mark.parametrize("bad", [INF, -INF, NAN])
def test_dwa_leaves_non_finite_steps_out(bad):
    weighting = dwa()
    for losses in ([3.0, 1.0], [bad, 1.0], [1.0, bad], [1.0, 1.0]):
        weighting.update_step(losses)
    assert numpy(weighting.steps_seen) == 2
    weighting.update_epoch()  # mean of the finite steps: [2, 1]
    weighting.update_step([bad, bad])
    weighting.update_epoch()  # no finite step: nothing recorded
    weighting.update_step([1.0, 1.0])
    weighting.update_epoch()
    np.testing.assert_allclose(numpy(weighting.loss_history),
                               [[2.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(
        numpy(weighting.task_weights()),
        numpy(dwa_weights([1.0, 1.0], [2.0, 1.0])), rtol=1e-6)


@pytest.mark.parametrize("bad", [INF, NAN, 0.0, -1.0])
def test_dwa_unusable_epoch_is_not_recorded(bad):
    weighting = dwa()
    weighting.update_epoch([2.0, 1.0])
    weighting.update_epoch([1.0, 1.0])
    state = [numpy(v) for v in weighting.weights]
    weighting.update_epoch([bad, 1.0])  # would give [nan, 0] or inf ratios
    for before, after in zip(state, weighting.weights):
        np.testing.assert_array_equal(numpy(after), before)
    weighting.update_epoch([0.5, 1.0])
    np.testing.assert_allclose(
        numpy(weighting.task_weights()),
        numpy(dwa_weights([0.5, 1.0], [1.0, 1.0])), rtol=1e-6)
    # an overflowing running sum is an unusable epoch too
    weighting.update_step([3e38, 1.0])
    weighting.update_step([3e38, 1.0])
    weighting.update_epoch()
    assert np.all(np.isfinite(numpy(weighting.task_weights())))
    assert numpy(weighting.epochs_seen) == 3


@pytest.mark.parametrize("losses", [[1.0, 2.0, 3.0], [1.0], 1.0,
                                    [[1.0, 2.0]]])
def test_dwa_wrong_number_of_losses(losses):
    weighting = dwa()
    with pytest.raises(ValueError, match="`task_losses`.*Received"):
        weighting.update_step(losses)
    with pytest.raises(ValueError, match="`mean_losses`.*Received"):
        weighting.update_epoch(losses)
    assert numpy(weighting.steps_seen) == 0


def test_dwa_weights_checks():
    with pytest.raises(ValueError, match="earlier_losses"):
        dwa_weights([1.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="previous_losses"):
        dwa_weights(1.0, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        dwa_weights([1.0], [1.0], temperature=INF)


# -- hyper-parameters --

BAD_ARGUMENTS = [
    (GradNorm, "alpha", NAN, ValueError),
    (GradNorm, "alpha", INF, ValueError),
    (GradNorm, "alpha", -0.5, ValueError),
    (GradNorm, "alpha", True, TypeError),
    (GradNorm, "alpha", "1.5", TypeError),
    (GradNorm, "alpha", None, TypeError),
    (GradNorm, "learning_rate", 0.0, ValueError),
    (GradNorm, "learning_rate", -0.1, ValueError),
    (GradNorm, "learning_rate", NAN, ValueError),
    (GradNorm, "learning_rate", INF, ValueError),
    (GradNorm, "learning_rate", True, TypeError),
    (GradNorm, "min_weight", NAN, ValueError),
    (GradNorm, "min_weight", INF, ValueError),
    (GradNorm, "min_weight", -0.1, ValueError),
    (GradNorm, "min_weight", 1.0, ValueError),
    (GradNorm, "min_weight", False, TypeError),
    (GradNorm, "layer", 3, TypeError),
    (GradNorm, "layer", "", ValueError),
    (DynamicWeightAverage, "temperature", 0.0, ValueError),
    (DynamicWeightAverage, "temperature", -2.0, ValueError),
    (DynamicWeightAverage, "temperature", NAN, ValueError),
    (DynamicWeightAverage, "temperature", INF, ValueError),
    (DynamicWeightAverage, "temperature", True, TypeError),
    (DynamicWeightAverage, "temperature", "2", TypeError),
    (UncertaintyWeighting, "initial_log_variance", NAN, ValueError),
    (UncertaintyWeighting, "initial_log_variance", INF, ValueError),
    (UncertaintyWeighting, "initial_log_variance", -INF, ValueError),
    (UncertaintyWeighting, "initial_log_variance", True, TypeError),
    (UncertaintyWeighting, "initial_log_variance", "0", TypeError),
    (UncertaintyWeighting, "initial_log_variance", None, TypeError),
]


@pytest.mark.parametrize(
    "cls,name,value,error", BAD_ARGUMENTS,
    ids=[f"{c.__name__}-{n}-{v!r}" for c, n, v, _ in BAD_ARGUMENTS])
def test_bad_hyperparameters_raise(cls, name, value, error):
    with pytest.raises(error, match=rf"`{name}`.*Received: {name}="):
        cls(**{name: value})


@pytest.mark.parametrize("cls", [EqualWeighting, UncertaintyWeighting,
                                 DynamicWeightAverage, GradNorm])
@pytest.mark.parametrize("num_tasks", [0, -1, 2.0, "2", True])
def test_bad_num_tasks_raises(cls, num_tasks):
    with pytest.raises(ValueError, match="num_tasks"):
        cls(num_tasks=num_tasks)


def test_edge_hyperparameters_are_accepted():
    weighting = GradNorm(alpha=0, learning_rate=np.float32(0.5),
                         min_weight=0, layer="trunk")
    assert (weighting.alpha, weighting.min_weight) == (0.0, 0.0)
    assert isinstance(weighting.learning_rate, float)
    assert DynamicWeightAverage(temperature=1).temperature == 1.0
    assert UncertaintyWeighting(
        initial_log_variance=np.log(4.0)).initial_log_variance == math.log(4)
    assert UncertaintyWeighting(initial_log_variance=-3).initial_log_variance \
        == -3.0


@pytest.mark.parametrize("losses", [[1.0, 2.0, 3.0], 1.0, [[1.0, 2.0]]])
def test_uncertainty_wrong_number_of_losses(losses):
    weighting = UncertaintyWeighting()
    weighting.set_tasks(["a", "b"])
    with pytest.raises(ValueError, match="`task_losses`.*Received"):
        weighting.combine_losses(losses)


# -- static weights --

BAD_WEIGHTS = [
    ([1.0, NAN], ValueError, r"weights\[1\]=nan"),
    ([1.0, INF], ValueError, r"weights\[1\]=inf"),
    ([-1.0, 1.0], ValueError, r"weights\[0\]=-1.0"),
    ([1.0, True], TypeError, r"weights\[1\]=True"),
    ([1.0, "2"], TypeError, r"weights\[1\]='2'"),
    ([1.0, None], TypeError, r"weights\[1\]=None"),
    ({"a": 1.0, "b": NAN}, ValueError, r"weights\['b'\]=nan"),
    ({"a": False, "b": 1.0}, TypeError, r"weights\['a'\]=False"),
    ({"a": -INF, "b": 1.0}, ValueError, r"weights\['a'\]=-inf"),
    ({1: 1.0, "b": 1.0}, TypeError, r"key 1"),
    ([0.0, 0.0], ValueError, r"positive.*weights=\[0.0, 0.0\]"),
    ({"a": 0, "b": 0.0}, ValueError, r"positive"),
    ([], ValueError, r"weights=\[\]"),
    ({}, ValueError, r"weights=\{\}"),
    (np.array([1.0, 2.0]), TypeError, r"list, tuple or dict"),
    (1.0, TypeError, r"list, tuple or dict"),
]


@pytest.mark.parametrize("weights,error,message", BAD_WEIGHTS,
                         ids=[repr(w) for w, _, _ in BAD_WEIGHTS])
def test_static_bad_weights_raise(weights, error, message):
    with pytest.raises(error, match=message) as info:
        StaticWeighting(weights)
    assert "`weights`" in str(info.value)


def test_static_weights_accepted():
    weighting = StaticWeighting((np.float32(0.5), 2, 0.0))
    weighting.set_tasks(["a", "b", "c"])
    np.testing.assert_array_equal(numpy(weighting.task_weights()),
                                  [0.5, 2.0, 0.0])
    weighting = StaticWeighting({"b": 0.1, "a": 1.0})
    weighting.set_tasks({"a": None, "b": None}.keys())
    np.testing.assert_allclose(numpy(weighting.task_weights()), [1.0, 0.1])
    assert StaticWeighting([1.0, 1.0], num_tasks=2).num_tasks == 2


@pytest.mark.parametrize("weights,tasks,unknown,missing", [
    ({"a": 1.0, "c": 1.0}, ["a", "b"], ["c"], ["b"]),
    ({"a": 1.0, "b": 1.0, "c": 1.0}, ["a", "b"], ["c"], []),
    ({"a": 1.0}, ["a", "b"], [], ["b"]),
])
def test_static_dict_names_must_match_the_tasks(weights, tasks, unknown,
                                                missing):
    weighting = StaticWeighting(weights)
    with pytest.raises(ValueError, match=r"`weights`") as info:
        weighting.set_tasks(tasks)
    assert f"unknown tasks {unknown}, missing tasks {missing}" in str(
        info.value)
    assert weighting.task_names is None
    assert weighting.get_config()["weights"] == weights  # unchanged


def test_static_set_tasks_errors():
    weighting = StaticWeighting({"a": 1.0, "b": 0.5})
    with pytest.raises(ValueError, match="task_names"):
        weighting.set_tasks(["a", "a"])
    assert weighting.get_config()["weights"] == {"a": 1.0, "b": 0.5}
    with pytest.raises(ValueError, match="task_names"):
        weighting.set_tasks("ab")
    weighting.set_tasks(["b", "a"])
    np.testing.assert_allclose(numpy(weighting.task_weights()), [0.5, 1.0])
    with pytest.raises(ValueError, match="already used"):
        weighting.set_tasks(["a", "b"])
    with pytest.raises(ValueError, match="2 tasks"):
        StaticWeighting([1.0, 1.0]).set_tasks(["a", "b", "c"])


@pytest.mark.parametrize("num_tasks", [3, True, "2"])
def test_static_num_tasks_must_match_the_weights(num_tasks):
    with pytest.raises(ValueError, match=r"`num_tasks`.*Received"):
        StaticWeighting([1.0, 1.0], num_tasks=num_tasks)
