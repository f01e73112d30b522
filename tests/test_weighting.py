"""Tests of mtlbook.weighting: every formula against a hand-computed case."""

import collections
import itertools
import math
import re

import keras
import numpy as np
import pytest

from mtlbook.weighting import (
    CAGrad, MGDA, DynamicWeightAverage, EqualWeighting, GradNorm, PCGrad,
    StaticWeighting, UncertaintyWeighting, cagrad, cagrad_weights,
    dwa_weights, gradnorm_weight_gradient, mgda_weights, pcgrad,
    gram_matrix, pcgrad_weights, task_order, flatten_gradients,
    unflatten_gradients,
)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def gradient(function, x):
    """The gradient of the scalar `function(x)` at `x`, on any backend."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.grad(function)(x)
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = function(x)
    return tape.gradient(value, x)


def compiled(function, static_argnames=()):
    """`function` compiled as in a training step (tf.function, jax.jit)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function, static_argnames=static_argnames)
    import tensorflow as tf

    return tf.function(function)


def test_equal_weighting_sums():
    assert numpy(EqualWeighting()(keras.ops.array([0.5, 2.0]))) == 2.5


def test_static_weighting_total():
    total = StaticWeighting([1.0, 0.1])(keras.ops.array([0.5, 2.0]))
    np.testing.assert_allclose(numpy(total), 0.7, rtol=1e-6)


def test_static_weighting_dict_order_and_errors():
    weighting = StaticWeighting({"b": 0.1, "a": 1.0})
    weighting.set_tasks(["a", "b"])
    np.testing.assert_allclose(numpy(weighting.task_weights()), [1.0, 0.1])
    with pytest.raises(ValueError, match="weights"):
        StaticWeighting({"a": 1.0, "c": 1.0}).set_tasks(["a", "b"])
    with pytest.raises(ValueError, match="3 tasks"):
        StaticWeighting([1.0, 1.0, 1.0]).set_tasks(["a", "b"])
    with pytest.raises(ValueError, match="non-negative"):
        StaticWeighting([1.0, -0.5])
    with pytest.raises(TypeError, match="weights"):
        StaticWeighting(1.0)


def test_uncertainty_total_by_hand():
    weighting = UncertaintyWeighting(initial_log_variance=np.log(4.0))
    losses = keras.ops.array([1.0, 8.0])
    s = np.log(4.0)
    expected = sum(0.5 * np.exp(-s) * L + 0.5 * s for L in (1.0, 8.0))
    np.testing.assert_allclose(numpy(weighting(losses)), expected, rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.sigma()), [2.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(numpy(weighting.task_weights()), [0.125] * 2)


def test_uncertainty_minimiser_is_the_loss():
    # d/ds (0.5 exp(-s) L + 0.5 s) = 0  <=>  exp(s) = L
    weighting = UncertaintyWeighting(num_tasks=1)
    weighting.build((1,))
    weighting.log_variance.assign([np.log(3.0)])

    def total(log_variance):
        value, _ = weighting.stateless_call(
            [log_variance], weighting.non_trainable_variables,
            keras.ops.array([3.0]))
        return value

    grad = gradient(total, keras.ops.convert_to_tensor(
        weighting.log_variance))
    np.testing.assert_allclose(numpy(grad), [0.0], atol=1e-6)


def test_dwa_weights_by_hand():
    ratios = np.array([1.0 / 2.0, 1.0 / 1.0]) / 2.0
    expected = 2 * np.exp(ratios) / np.exp(ratios).sum()
    np.testing.assert_allclose(
        numpy(dwa_weights([1.0, 1.0], [2.0, 1.0], 2.0)), expected, rtol=1e-6
    )


def test_dwa_first_two_epochs_then_history():
    weighting = DynamicWeightAverage(temperature=2.0, num_tasks=2)
    weighting.build((2,))
    np.testing.assert_allclose(numpy(weighting.task_weights()), [1, 1])
    weighting.update_epoch([2.0, 1.0])
    np.testing.assert_allclose(numpy(weighting.task_weights()), [1, 1])
    weighting.update_epoch([1.0, 1.0])
    np.testing.assert_allclose(
        numpy(weighting.task_weights()),
        numpy(dwa_weights([1.0, 1.0], [2.0, 1.0])), rtol=1e-6,
    )
    np.testing.assert_allclose(numpy(weighting.task_weights()).sum(), 2.0,
                               rtol=1e-6)
    total = weighting(keras.ops.array([1.0, 2.0]))
    w = numpy(weighting.task_weights())
    np.testing.assert_allclose(numpy(total), w[0] + 2 * w[1], rtol=1e-6)


def test_dwa_epoch_mean_from_steps():
    weighting = DynamicWeightAverage(temperature=2.0)
    weighting.set_tasks(["a", "b"])
    for losses in ([3.0, 1.0], [1.0, 1.0]):  # epoch 1: mean [2, 1]
        weighting.update_step(keras.ops.array(losses))
    weighting.update_epoch()
    weighting.update_epoch()  # no step since: nothing changes
    weighting.update_step(keras.ops.array([1.0, 1.0]))
    weighting.update_epoch()
    np.testing.assert_allclose(
        numpy(weighting.task_weights()),
        numpy(dwa_weights([1.0, 1.0], [2.0, 1.0])), rtol=1e-6,
    )
    with pytest.raises(ValueError, match="mean_losses"):
        weighting.update_epoch([1.0, 2.0, 3.0])


def test_dwa_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        DynamicWeightAverage(temperature=0.0)


def test_gradnorm_weight_gradient_by_hand():
    gradient = gradnorm_weight_gradient([1.0, 1.0], [1.0, 1.0], [1.0, 1.0],
                                        [2.0, 1.0])
    np.testing.assert_allclose(numpy(gradient), [2.0, -1.0])
    # a task that trains slowly (larger loss ratio) gets a larger target
    gradient = gradnorm_weight_gradient([1.0, 1.0], [1.0, 0.25], [1.0, 1.0],
                                        [1.0, 1.0], alpha=1.0)
    # r = [1.6, 0.4], target = [1.6, 0.4], G = [1, 1]
    np.testing.assert_allclose(numpy(gradient), [-1.0, 1.0])


def test_gradnorm_update_renormalises_and_records_initial_losses():
    weighting = GradNorm(alpha=1.0, learning_rate=0.1, num_tasks=2)
    weighting.build((2,))
    weighting.update_step([1.0, 1.0], [2.0, 1.0])
    np.testing.assert_allclose(numpy(weighting.initial_losses), [1.0, 1.0])
    # w = [1, 1] - 0.1 * [2, -1] / 1.5 -> * 2 / sum
    new = np.array([1.0, 1.0]) - 0.1 * np.array([2.0, -1.0]) / 1.5
    np.testing.assert_allclose(
        numpy(weighting.task_weights()), new * 2 / new.sum(),
        rtol=1e-6,
    )
    weighting.update_step([0.5, 1.0], [1.0, 1.0])
    np.testing.assert_allclose(numpy(weighting.initial_losses), [1.0, 1.0])
    np.testing.assert_allclose(numpy(weighting.task_weights()).sum(), 2.0,
                               rtol=1e-6)


def test_gradnorm_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        GradNorm(alpha=-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        GradNorm(learning_rate=0.0)


def test_pcgrad_two_conflicting_vectors_by_hand():
    result = pcgrad([[1.0, 0.0], [-1.0, 1.0]], seed=0)
    # p1 = g1 + 0.5 g2 = [0.5, 0.5], p2 = g2 + g1 = [0, 1]
    np.testing.assert_allclose(numpy(result), [0.5, 1.5], atol=1e-6)


def test_pcgrad_non_conflicting_pass_unchanged():
    g = np.array([[1.0, 0.5, 0.0], [0.2, 1.0, 1.0], [0.0, 0.1, 2.0]])
    np.testing.assert_allclose(numpy(pcgrad(g, seed=1)), g.sum(0), rtol=1e-6)


def test_pcgrad_projection_removes_conflict():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = rng.normal(size=(2, 5)).astype("float32")
        if g[0] @ g[1] >= 0:
            continue
        p1 = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
        p2 = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
        np.testing.assert_allclose(numpy(pcgrad(g, seed=2)), p1 + p2,
                                   rtol=1e-4, atol=1e-5)
        assert abs(p1 @ g[1]) < 1e-4 and abs(p2 @ g[0]) < 1e-4


def test_pcgrad_order_matters_for_three_tasks_and_seed_repeats():
    g = np.array([[1.0, 0.0], [-0.8, 0.6], [-0.6, -0.8]], "float32")
    a = numpy(pcgrad(g, seed=5, step=1))
    np.testing.assert_allclose(a, numpy(pcgrad(g, seed=5, step=1)))
    results = {tuple(np.round(numpy(pcgrad(g, seed=s)), 4))
               for s in range(20)}
    assert len(results) > 1


def pcgrad_in_order(task_gradients, order):
    """PCGrad's update with a given task order, in float64 NumPy."""
    gradients = np.asarray(task_gradients, "float64")
    projected = gradients.copy()
    for other in order:
        for task in range(len(gradients)):
            dot = projected[task] @ gradients[other]
            if task != other and dot < 0:
                projected[task] -= (dot / (gradients[other] @ gradients[other])
                                    * gradients[other])
    return projected.sum(0)


# The task orders that PCGrad draws from the seeds (seed, step) for 4
# tasks: a pure integer hash in keras.ops, so every backend (the JAX pass
# runs this test too), every replica and a resumed run draw these.
PCGRAD_ORDERS = {
    (0, 0): (0, 3, 1, 2),
    (0, 1): (0, 1, 3, 2),
    (0, 7): (2, 3, 1, 0),
    (3, 0): (3, 0, 2, 1),
    (3, 12): (3, 2, 1, 0),
    (5, 3): (1, 3, 2, 0),
    (42, 100): (2, 0, 1, 3),
    (1234, 99999): (3, 0, 1, 2),
}


def test_pcgrad_task_order_from_seed_and_step_is_pinned():
    g = np.random.default_rng(8).normal(size=(4, 3)).astype("float32")
    updates = {order: pcgrad_in_order(g, order)
               for order in itertools.permutations(range(4))}
    # every order gives a different update: the update tells the order
    values = np.array(list(updates.values()))
    gaps = np.abs(values[:, None] - values[None]).max(-1) + 9 * np.eye(24)
    assert gaps.min() > 0.1
    for (seed, step), order in PCGRAD_ORDERS.items():
        assert tuple(numpy(task_order(4, seed, step))) == order
        expected = updates[order]
        np.testing.assert_allclose(numpy(pcgrad(g, seed=seed, step=step)),
                                   expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(numpy(PCGrad(seed=seed)(g, step=step)),
                                   expected, rtol=1e-5, atol=1e-5)
        step_tensor = keras.ops.convert_to_tensor(step, "int32")
        np.testing.assert_allclose(
            numpy(compiled(lambda v, t: pcgrad(v, seed=seed, step=t))(
                g, step_tensor)), expected, rtol=1e-5, atol=1e-5)


def test_task_orders_are_uniform_and_checked():
    counts = collections.Counter(
        tuple(numpy(task_order(3, seed=0, step=step))) for step in range(600))
    assert len(counts) == 6 and min(counts.values()) > 60  # 100 expected
    assert sorted(numpy(task_order(5, seed=None))) == list(range(5))
    with pytest.raises(ValueError, match="num_tasks"):
        task_order(0, seed=1)


def test_pcgrad_matches_the_direct_projection_for_many_tasks():
    rng = np.random.default_rng(3)
    for step in range(10):
        g = rng.normal(size=(5, 40)).astype("float32")
        order = tuple(numpy(task_order(5, seed=2, step=step)))
        np.testing.assert_allclose(numpy(pcgrad(g, seed=2, step=step)),
                                   pcgrad_in_order(g, order),
                                   rtol=1e-4, atol=1e-4)


def test_pcgrad_weights_combine_the_gradients():
    g = np.random.default_rng(4).normal(size=(3, 7)).astype("float32")
    weights = numpy(pcgrad_weights(g, seed=1, step=2))
    np.testing.assert_allclose(weights @ g, numpy(pcgrad(g, seed=1, step=2)),
                               rtol=1e-5, atol=1e-6)


def test_pcgrad_bad_shape():
    with pytest.raises(ValueError, match="task_gradients"):
        pcgrad([1.0, 2.0])


def test_mgda_two_task_closed_form():
    np.testing.assert_allclose(
        numpy(mgda_weights([[1.0, 0.0], [0.0, 2.0]])), [0.8, 0.2], rtol=1e-6
    )
    # one gradient inside the other's direction: min norm is the shorter
    np.testing.assert_allclose(
        numpy(mgda_weights([[1.0, 0.0], [3.0, 0.0]])), [1.0, 0.0]
    )


def test_mgda_frank_wolfe_matches_grid_search():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(3, 4)).astype("float32")
    w = numpy(mgda_weights(g, max_iterations=500))
    assert np.all(w >= -1e-6) and abs(w.sum() - 1) < 1e-5
    grid = [np.array([a, b, 1 - a - b]) for a, b in
            itertools.product(np.linspace(0, 1, 101), repeat=2) if a + b <= 1]
    best = min(np.sum((v @ g) ** 2) for v in grid)
    assert np.sum((w @ g) ** 2) <= best + 1e-3


def test_mgda_layer_scales_by_num_tasks():
    g = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    np.testing.assert_allclose(
        numpy(MGDA()(g)), 2 * (0.8 * g[0] + 0.2 * g[1]), rtol=1e-6
    )


def test_cagrad_by_grid_search_and_formula():
    g = np.array([[1.0, 0.0], [-0.5, 1.0]], "float32")
    c = 0.4
    g0 = g.mean(0)
    phi = c ** 2 * g0 @ g0

    def objective(w):
        gw = w @ g
        return gw @ g0 + np.sqrt(phi) * np.linalg.norm(gw)

    grid = [np.array([a, 1 - a]) for a in np.linspace(0, 1, 2001)]
    best = min(grid, key=objective)
    # Compiled, as in training: 2,000 eager loop iterations would take ~10 s.
    static = ("c", "max_iterations")
    w = numpy(compiled(cagrad_weights, static)(g, c, max_iterations=2000))
    assert objective(w) <= objective(best) + 1e-3
    gw = w @ g
    expected = (g0 + np.sqrt(phi) / np.linalg.norm(gw) * gw) / (1 + c ** 2)
    np.testing.assert_allclose(
        numpy(compiled(cagrad, static)(g, c, max_iterations=2000)),
        expected, rtol=1e-5)


def test_cagrad_with_zero_c_is_mean_gradient():
    g = np.array([[1.0, 0.0], [-0.5, 1.0]], "float32")
    np.testing.assert_allclose(numpy(cagrad(g, c=0.0)), g.mean(0), rtol=1e-6)
    np.testing.assert_allclose(numpy(CAGrad(c=0.0)(g)), g.sum(0), rtol=1e-6)
    with pytest.raises(ValueError, match="`c`"):
        CAGrad(c=-1.0)


def test_num_tasks_check():
    with pytest.raises(ValueError, match="num_tasks"):
        EqualWeighting(num_tasks=0)
    weighting = UncertaintyWeighting(num_tasks=3)
    with pytest.raises(ValueError, match="built for 3 tasks"):
        weighting.check_num_tasks(2)


@pytest.mark.parametrize("strategy", [
    EqualWeighting(), StaticWeighting({"a": 1.0, "b": 0.5}),
    UncertaintyWeighting(initial_log_variance=0.3),
    DynamicWeightAverage(temperature=1.5), GradNorm(alpha=0.5),
    PCGrad(seed=3), MGDA(max_iterations=10), CAGrad(c=0.2),
], ids=lambda s: type(s).__name__)
def test_config_round_trip(strategy):
    config = strategy.get_config()
    restored = type(strategy).from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(strategy)
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is type(strategy)


def test_pcgrad_seed_type():
    with pytest.raises(TypeError, match="seed"):
        PCGrad(seed="a")


@pytest.mark.parametrize("num_tasks", [1, 2, 4, 6])
def test_gram_matrix_both_paths(num_tasks):
    g = np.random.default_rng(num_tasks).normal(size=(num_tasks, 50))
    g = g.astype("float32")
    np.testing.assert_allclose(numpy(gram_matrix(g)), g @ g.T, rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="task_gradients"):
        gram_matrix(g[0])


# --- issue 15: wrong shapes and degenerate losses ---------------------------

LOSS_STRATEGIES = {
    "EqualWeighting": EqualWeighting,
    "StaticWeighting": lambda: StaticWeighting([1.0, 2.0]),
    "DynamicWeightAverage": DynamicWeightAverage,
    "GradNorm": GradNorm,
}


@pytest.mark.parametrize("name", sorted(LOSS_STRATEGIES))
@pytest.mark.parametrize("losses", [1.0, [1.0], [1.0, 2.0, 3.0],
                                    [[1.0], [2.0]]], ids=repr)
def test_combine_losses_needs_one_loss_per_task(name, losses):
    weighting = LOSS_STRATEGIES[name]()
    weighting.set_tasks(["a", "b"])
    shape = np.shape(losses)
    message = (r"`task_losses` must have shape \(2,\), one loss per task. "
               rf"Received: task_losses.shape={re.escape(str(shape))}")
    with pytest.raises(ValueError, match=message):
        weighting.combine_losses(keras.ops.convert_to_tensor(losses))
    # inside a compiled step too, the shape being known when traced
    with pytest.raises(ValueError, match=message):
        compiled(weighting.combine_losses)(
            keras.ops.convert_to_tensor(losses))
    total = weighting.combine_losses(keras.ops.convert_to_tensor([1.0, 2.0]))
    expected = np.dot(numpy(weighting.task_weights()), [1.0, 2.0])
    np.testing.assert_allclose(numpy(total), expected, rtol=1e-6)


def test_flatten_gradients_checks_each_shape():
    variables = [keras.Variable(np.zeros((2, 2))),
                 keras.Variable(np.zeros((2,)))]
    with pytest.raises(ValueError, match=r"`gradients\[0\]` must have the "
                       r"shape \(2, 2\) of `variables\[0\]`. Received: "
                       r"gradients\[0\].shape=\(4,\)"):
        flatten_gradients([np.ones(4), None], variables)
    with pytest.raises(ValueError, match=r"gradients\[1\].shape=\(2, 1\)"):
        flatten_gradients([None, [[1.0], [2.0]]], variables)
    np.testing.assert_allclose(
        numpy(flatten_gradients([np.ones((2, 2)), [3.0, 4.0]], variables)),
        [1, 1, 1, 1, 3, 4])


def test_unflatten_gradients_takes_array_likes():
    variables = [keras.Variable(np.zeros((2, 2))),
                 keras.Variable(np.zeros((2,)))]
    pieces = unflatten_gradients([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], variables)
    np.testing.assert_allclose(numpy(pieces[0]), [[0, 1], [2, 3]])
    np.testing.assert_allclose(numpy(pieces[1]), [4, 5])
    for vector, shape in (([1.0] * 5, "(5,)"), (np.ones((2, 3)), "(2, 3)")):
        with pytest.raises(ValueError, match=r"`vector` must have 6 "
                           rf"entries.*vector.shape={re.escape(shape)}"):
            unflatten_gradients(vector, variables)


@pytest.mark.parametrize("previous, earlier", [
    ([1.0, 1.0], [0.0, 1.0]),
    ([0.0, 1.0], [0.0, 1.0]),
    ([math.inf, 1.0], [1.0, 1.0]),
    ([math.nan, 1.0], [1.0, 1.0]),
    ([-1.0, 1.0], [1.0, 1.0]),
    ([1e30, 1.0], [1e-30, 1.0]),  # the ratio overflows
    ([0.0, 0.0], [0.0, 0.0]),
], ids=repr)
def test_dwa_weights_without_a_ratio_get_one(previous, earlier):
    np.testing.assert_array_equal(numpy(dwa_weights(previous, earlier)),
                                  [1.0, 1.0])


def test_dwa_weights_share_the_rest_by_hand():
    weights = numpy(dwa_weights([1.0, 0.0, 2.0], [2.0, 1.0, 2.0],
                                temperature=2.0))
    exponentials = np.exp([0.5 / 2.0, 1.0 / 2.0])
    np.testing.assert_allclose(
        weights[[0, 2]], 2.0 * exponentials / exponentials.sum(), rtol=1e-6)
    assert weights[1] == 1.0
    np.testing.assert_allclose(weights.sum(), 3.0, rtol=1e-6)
    compiled_weights = compiled(dwa_weights)(
        np.array([1.0, 0.0, 2.0], "float32"),
        np.array([2.0, 1.0, 2.0], "float32"))
    np.testing.assert_allclose(numpy(compiled_weights), weights, rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan], ids=repr)
def test_gradnorm_weight_gradient_leaves_out_unusable_tasks(bad):
    weights, norms = [1.0, 0.5, 2.0], [2.0, 1.0, 0.5]
    losses, initial = [1.0, 0.8, 0.3], [1.0, 1.0, 0.5]
    reference = numpy(gradnorm_weight_gradient(
        weights, losses, initial, norms, active=[True, False, True]))
    for changed in ({"task_losses": [1.0, bad, 0.3]},
                    {"initial_losses": [1.0, bad, 0.5]}):
        arguments = {"weights": weights, "task_losses": losses,
                     "initial_losses": initial, "gradient_norms": norms,
                     **changed}
        np.testing.assert_array_equal(
            numpy(gradnorm_weight_gradient(**arguments)), reference)
    if not math.isfinite(bad):
        np.testing.assert_array_equal(numpy(gradnorm_weight_gradient(
            weights, losses, initial, [2.0, bad, 0.5])), reference)
    everything_bad = numpy(gradnorm_weight_gradient(
        [1.0, 1.0], [bad, bad], [1.0, 1.0], [1.0, 2.0]))
    np.testing.assert_array_equal(everything_bad, [0.0, 0.0])
