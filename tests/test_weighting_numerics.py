"""Numerics of the gradient methods: scale, float16, degenerate gradients.

PCGrad, MGDA and CAGrad multiply gradients together; these tests check
that they neither overflow nor underflow (results are scale-equivariant
from 1e-30 to 1e30 and in float16), that zero and duplicated gradients
give finite, correct results, and that MGDA and CAGrad reach the exact
minimum on adversarial cases, against independent float64 NumPy solvers.
"""

import itertools
import math

import keras
import numpy as np
import pytest

from mtlbook.weighting import (
    CAGrad, MGDA, PCGrad, EqualWeighting, cagrad, cagrad_weights,
    mgda_weights, pcgrad, pcgrad_weights, task_order,
)
from mtlbook.weighting.base import (
    check_task_gradients, gram_matrix, normalized_gram_matrix,
    scale_task_gradients)

SCALES = [1e-30, 1e-20, 1e-10, 3.7e-3, 1.0, 7.1e4, 1e10, 1e20, 1e30]
# The JAX pass (`make test-jax`) checks that the same keras.ops code gives
# the same answers on a second backend; every case shape is compiled anew
# there, so it runs each adversarial kind twice and the extreme scales
# instead of the whole TensorFlow set (same assertions, fewer repetitions).
ON_JAX = keras.backend.backend() == "jax"
if ON_JAX:
    SCALES = [1e-30, 3.7e-3, 1e30]


def case_count(count):
    """`count` cases on TensorFlow, two of each kind on JAX."""
    return min(count, 12) if ON_JAX else count


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def compiled(function, static_argnames=()):
    """`function` compiled as in a training step (tf.function, jax.jit)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function, static_argnames=static_argnames)
    import tensorflow as tf

    return tf.function(function)


# --- independent float64 references ---------------------------------------

def mgda_reference(task_gradients):
    """Minimum-norm simplex weights: every support's KKT system, in float64.

    For each support `S` it solves `[[M_SS, 1], [1^T, 0]] [w; -l] = [0; 1]`
    by least squares, keeps the solutions that solve it (residual) with
    `w >= 0`, and returns the one of least norm `w^T M w`.
    """
    gradients = np.asarray(task_gradients, "float64")
    gram = gradients @ gradients.T
    num_tasks = len(gradients)
    best, best_norm = None, np.inf
    for size in range(1, num_tasks + 1):
        for support in itertools.combinations(range(num_tasks), size):
            index = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = gram[np.ix_(index, index)]
            kkt[:size, size] = kkt[size, :size] = 1.0
            right = np.zeros(size + 1)
            right[size] = 1.0
            solution = np.linalg.lstsq(kkt, right, rcond=None)[0]
            residual = np.abs(kkt @ solution - right).max()
            if residual > 1e-9 * max(1.0, np.abs(kkt).max()):
                continue
            weights = np.zeros(num_tasks)
            weights[index] = solution[:size]
            if weights.min() < -1e-12:
                continue
            weights = np.maximum(weights, 0.0) / np.maximum(weights, 0).sum()
            norm = weights @ gram @ weights
            if norm < best_norm:
                best, best_norm = weights, norm
    return best


def cagrad_reference(task_gradients, c):
    """CAGrad's update in float64, by bisection on `s = |g_w|`.

    `min_w g_w . g_0 + r |g_w|` (`r = c |g_0|`) equals
    `min_s min_w g_w . g_0 + r |g_w|^2 / (2 s) + r s / 2`; the inner
    minimum is the minimum-norm point of the shifted gradients
    `g_i + (s / r) g_0` (`mgda_reference`), and the outer derivative has
    the sign of `s - |g_w(s)|`, which changes once: bisection finds it.
    """
    gradients = np.asarray(task_gradients, "float64")
    mean = gradients.mean(0)
    radius = c * np.linalg.norm(mean)

    def combined(s):
        weights = mgda_reference(gradients + (s / radius) * mean)
        return weights @ gradients

    low, high = 0.0, 2.0 * np.linalg.norm(gradients, axis=1).max()
    for _ in range(50):
        middle = 0.5 * (low + high)
        if middle < np.linalg.norm(combined(middle)):
            low = middle
        else:
            high = middle
    point = combined(high)
    norm = np.linalg.norm(point)
    direction = mean + (radius / norm * point if norm > 0 else 0.0)
    return direction / (1.0 + c ** 2)


def adversarial_cases(seed, count, max_tasks=8):
    """`(kind, G)` float32 cases with `T = 3 .. max_tasks`, `D = 2 .. 50`."""
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        num_tasks = int(rng.integers(3, max_tasks + 1))
        size = int(rng.integers(2, 51))
        kind = ["random", "face", "near-parallel", "duplicated", "zero row",
                "rank-deficient"][index % 6]
        gradients = rng.normal(size=(num_tasks, size))
        if kind == "face":  # aligned tasks and one conflicting pair
            aligned, conflict = rng.normal(size=(2, size))
            gradients = aligned + 0.3 * rng.normal(size=(num_tasks, size))
            gradients[0] = conflict + 0.2 * aligned
            gradients[1] = -conflict + 0.2 * aligned
        elif kind == "near-parallel":
            aligned = rng.normal(size=size)
            gradients = aligned + 1e-3 * rng.normal(size=(num_tasks, size))
            gradients[0] = -0.5 * aligned + 0.5 * rng.normal(size=size)
        elif kind == "duplicated":
            gradients[1] = gradients[0]
            gradients[-1] = gradients[2]
        elif kind == "zero row":
            gradients[int(rng.integers(num_tasks))] = 0.0
        elif kind == "rank-deficient":
            rank = int(rng.integers(1, max(2, min(num_tasks, size))))
            gradients = (rng.normal(size=(num_tasks, rank))
                         @ rng.normal(size=(rank, size)))
        cases.append((kind, gradients.astype("float32")))
    return cases


def assert_update_close(actual, expected, gradients, rtol=1e-4):
    """`|actual - expected| <= rtol |expected| + 1e-5 max_i |g_i|`.

    The absolute term is float32's floor: the Gram matrix is computed in
    float32 (relative rounding ~1e-7 of `max |g_i|^2`), which moves a
    minimum-norm point near 0 by ~1e-6 of `max |g_i|`.
    """
    floor = 1e-5 * np.linalg.norm(gradients, axis=1).max()
    error = np.linalg.norm(np.asarray(actual, "float64") - expected)
    assert error <= rtol * np.linalg.norm(expected) + floor, (
        error, np.linalg.norm(expected))


def test_references_on_hand_cases():
    np.testing.assert_allclose(
        mgda_reference([[1.0, 0.0], [0.0, 2.0]]), [0.8, 0.2])
    # the origin is in the hull: weights with sum(w_i g_i) = 0
    weights = mgda_reference([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]])
    np.testing.assert_allclose(weights @ np.array(
        [[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]]), [0.0, 0.0], atol=1e-12)
    # CAGrad for two tasks: a grid over the segment
    gradients, c = np.array([[1.0, 0.0], [-0.5, 1.0]]), 0.4
    mean = gradients.mean(0)
    grid = np.linspace(0, 1, 200001)[:, None] * (gradients[0] - gradients[1])
    grid += gradients[1]
    values = grid @ mean + c * np.linalg.norm(mean) * np.linalg.norm(
        grid, axis=1)
    point = grid[np.argmin(values)]
    expected = (mean + c * np.linalg.norm(mean) * point
                / np.linalg.norm(point)) / (1 + c ** 2)
    np.testing.assert_allclose(cagrad_reference(gradients, c), expected,
                               atol=1e-5)


# --- item 4: exact solutions ------------------------------------------------

@pytest.mark.parametrize("seed", [0] if ON_JAX else [0, 1])
def test_mgda_matches_the_exact_minimum(seed):
    for kind, gradients in adversarial_cases(seed, case_count(36)):
        weights = numpy(mgda_weights(gradients))
        assert weights.min() >= 0.0 and abs(weights.sum() - 1) < 1e-5, kind
        expected = mgda_reference(gradients) @ gradients.astype("float64")
        assert_update_close(weights @ gradients, expected, gradients)
        num_tasks = len(gradients)
        assert_update_close(numpy(MGDA()(gradients)) / num_tasks, expected,
                            gradients)


def test_mgda_face_case_where_frank_wolfe_stalls():
    # two conflicting tasks among aligned ones: the minimum lies on an edge
    gradients = np.array([[1.0, 0.2, 0.0], [-1.0, 0.2, 0.0],
                          [0.1, 1.0, 0.3], [0.0, 1.1, -0.2]], "float32")
    expected = mgda_reference(gradients) @ gradients.astype("float64")
    np.testing.assert_allclose(expected, [0.0, 0.2, 0.0], atol=1e-12)
    np.testing.assert_allclose(numpy(mgda_weights(gradients)),
                               [0.5, 0.5, 0.0, 0.0], atol=1e-6)


def test_cagrad_matches_the_exact_minimum():
    for kind, gradients in adversarial_cases(2, case_count(24),
                                          max_tasks=6):
        for c in (0.4, 0.9):
            expected = cagrad_reference(gradients, c)
            assert_update_close(numpy(cagrad(gradients, c)), expected,
                                gradients)
        weights = numpy(cagrad_weights(gradients, 0.4))
        assert weights.min() >= 0.0 and abs(weights.sum() - 1) < 1e-5, kind


def test_cagrad_layer_up_to_eight_tasks():
    for kind, gradients in adversarial_cases(3, 6, max_tasks=8):
        expected = cagrad_reference(gradients, 0.4)
        assert_update_close(numpy(CAGrad()(gradients)) / len(gradients),
                            expected, gradients)


def test_compiled_matches_eager():
    gradients = adversarial_cases(4, 2)[1][1]
    for function, static in ((mgda_weights, ("max_iterations",)),
                             (cagrad, ("c", "max_iterations"))):
        np.testing.assert_allclose(
            numpy(compiled(function, static)(gradients)),
            numpy(function(gradients)), rtol=1e-5, atol=1e-6)


def test_more_tasks_than_exact_solve_still_on_the_simplex():
    gradients = np.random.default_rng(5).normal(size=(11, 6))
    gradients = gradients.astype("float32")
    for function in (mgda_weights, cagrad_weights):
        weights = numpy(function(gradients, max_iterations=20))
        assert weights.min() >= 0.0 and abs(weights.sum() - 1) < 1e-5


# --- item 3: scale, float16, zero gradients ---------------------------------

def base_gradients():
    rng = np.random.default_rng(6)
    plain = rng.normal(size=(4, 20)).astype("float32")
    with_zero = plain.copy()
    with_zero[2] = 0.0
    return {"plain": plain, "zero row": with_zero}


UPDATES = {
    "pcgrad": lambda g: pcgrad(g, seed=0, step=3),
    "mgda": lambda g: MGDA()(g),
    "cagrad": lambda g: cagrad(g, c=0.4),
}
WEIGHTS = {
    "pcgrad": lambda g: pcgrad_weights(g, seed=0, step=3),
    "mgda": mgda_weights,
    "cagrad": cagrad_weights,
}


@pytest.mark.parametrize("method", sorted(UPDATES))
@pytest.mark.parametrize("case", ["plain", "zero row"])
def test_updates_are_scale_equivariant(method, case):
    gradients = base_gradients()[case]
    reference = numpy(UPDATES[method](gradients)).astype("float64")
    weights = numpy(WEIGHTS[method](gradients))
    assert np.all(np.isfinite(reference))
    # MGDA's minimum-norm point of gradients with a zero row is 0
    assert np.any(reference != 0) == (method != "mgda" or case == "plain")
    for scale in SCALES:
        scaled = (gradients.astype("float64") * scale).astype("float32")
        update = numpy(UPDATES[method](scaled)).astype("float64")
        assert np.all(np.isfinite(update)), (method, scale)
        np.testing.assert_allclose(update / scale, reference, rtol=1e-4,
                                   atol=1e-5, err_msg=f"scale {scale}")
        np.testing.assert_allclose(numpy(WEIGHTS[method](scaled)), weights,
                                   rtol=1e-4, atol=1e-5)


def test_issue_cases_at_extreme_scales():
    gradients = np.array([[1.0, 0.0], [0.0, 2.0]])
    for scale in (1e-30, 1e20):
        scaled = (gradients * scale).astype("float32")
        np.testing.assert_allclose(numpy(mgda_weights(scaled)), [0.8, 0.2],
                                   rtol=1e-6)
        conflicting = (np.array([[1.0, 0.0], [-1.0, 1.0]]) * scale)
        np.testing.assert_allclose(
            numpy(pcgrad(conflicting.astype("float32"), seed=0)) / scale,
            [0.5, 1.5], rtol=1e-6)
        update = numpy(cagrad(scaled, 0.4)) / scale
        assert_update_close(update, cagrad_reference(gradients, 0.4),
                            gradients)


def test_power_of_two_scaling_is_exact():
    gradients = np.random.default_rng(7).normal(size=(3, 5))
    scaled, scale = scale_task_gradients(gradients.astype("float32") * 1e20)
    assert math.log2(float(numpy(scale))).is_integer()
    assert 0.5 <= np.abs(numpy(scaled)).max() < 4.0
    for update in UPDATES.values():  # bit for bit: the digits are the same
        assert np.array_equal(
            numpy(update(gradients.astype("float32") * 2.0 ** 40)),
            numpy(update(gradients.astype("float32"))) * 2.0 ** 40)
    _, scale = scale_task_gradients(np.zeros((2, 3), "float32"))
    assert float(numpy(scale)) == 1.0


def test_normalized_gram_matrix_both_paths():
    gradients = np.random.default_rng(8).normal(size=(3, 5))
    gradients = gradients.astype("float32")
    reference = numpy(normalized_gram_matrix(gradients))
    assert 0.5 <= np.diagonal(reference).max() < 4.0
    # 2^70: G G^T overflows, 2^-100: it underflows; same digits as 2^0
    for power in (70, -100, 10):
        np.testing.assert_array_equal(
            numpy(normalized_gram_matrix(gradients * 2.0 ** power)),
            reference)
    np.testing.assert_array_equal(
        numpy(normalized_gram_matrix(np.zeros((2, 3)))), 0.0)


@pytest.mark.parametrize("method", sorted(UPDATES))
def test_float16_input_is_computed_in_float32(method):
    for gradients in base_gradients().values():
        for scale in (1e-4, 1.0, 3e3):  # float16 spans 6e-8 .. 65504
            half = (gradients * scale).astype("float16")
            update = UPDATES[method](half)
            assert keras.backend.standardize_dtype(update.dtype) == "float32"
            update = numpy(update)
            assert np.all(np.isfinite(update)), (method, scale)
            np.testing.assert_allclose(
                update, numpy(UPDATES[method](half.astype("float32"))),
                rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("method", sorted(UPDATES))
def test_all_zero_gradients_give_zero(method):
    zeros = np.zeros((4, 6), "float32")
    np.testing.assert_array_equal(numpy(UPDATES[method](zeros)), 0.0)
    weights = numpy(WEIGHTS[method](zeros))
    assert np.all(np.isfinite(weights))


def test_zero_rows_by_hand():
    gradients = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], "float32")
    # MGDA: the zero gradient is the minimum-norm point
    np.testing.assert_allclose(numpy(mgda_weights(gradients)), [0, 1, 0])
    np.testing.assert_array_equal(numpy(MGDA()(gradients)), [0.0, 0.0])
    # PCGrad: nothing is projected on the zero gradient
    np.testing.assert_allclose(numpy(pcgrad(gradients, seed=1)), [0.5, 1.5],
                               atol=1e-6)
    # CAGrad: finite, the exact update
    assert_update_close(numpy(cagrad(gradients, 0.4)),
                        cagrad_reference(gradients, 0.4), gradients)


@pytest.mark.parametrize("method", sorted(UPDATES))
def test_nan_gradient_is_not_hidden(method):
    gradients = base_gradients()["plain"].copy()
    gradients[1, 3] = np.nan
    assert not np.all(np.isfinite(numpy(UPDATES[method](gradients))))


# --- item 8: hyper-parameters -----------------------------------------------

BAD_ITERATIONS = [math.nan, math.inf, -1, 0, True, 2.5, "3", None]


@pytest.mark.parametrize("value", BAD_ITERATIONS, ids=repr)
def test_bad_max_iterations(value):
    gradients = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    for build in (lambda: MGDA(max_iterations=value),
                  lambda: CAGrad(max_iterations=value),
                  lambda: mgda_weights(gradients, max_iterations=value),
                  lambda: cagrad_weights(gradients, max_iterations=value),
                  lambda: cagrad(gradients, max_iterations=value)):
        with pytest.raises(ValueError, match="`max_iterations` must be an "
                           r"int >= 1. Received: max_iterations="):
            build()


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5, True, "0.4",
                                   None], ids=repr)
def test_bad_c(value):
    gradients = [[1.0, 0.0], [0.0, 1.0]]
    for build in (lambda: CAGrad(c=value), lambda: cagrad(gradients, c=value),
                  lambda: cagrad_weights(gradients, c=value)):
        with pytest.raises(ValueError,
                           match=r"`c` must be a finite float >= 0. Received"):
            build()


def test_good_hyper_parameters_of_numpy_types():
    assert MGDA(max_iterations=np.int64(7)).max_iterations == 7
    assert CAGrad(c=np.float32(0.5)).c == 0.5
    assert CAGrad(c=1).c == 1.0


@pytest.mark.parametrize("value", [True, False, 2.0, "2", 0])
def test_bad_num_tasks(value):
    with pytest.raises(ValueError, match="`num_tasks` must be a positive"):
        EqualWeighting(num_tasks=value)
    with pytest.raises(ValueError, match="`num_tasks` must be a positive"):
        EqualWeighting().check_num_tasks(value)
    with pytest.raises(ValueError, match="`num_tasks` must be a positive"):
        task_order(value, seed=0)


@pytest.mark.parametrize("value", [True, 3, None, "ab", ["a", "a"], []],
                         ids=repr)
def test_bad_task_names(value):
    with pytest.raises(ValueError, match="`task_names` must be a non-empty"):
        EqualWeighting().set_tasks(value)


def test_task_names_from_any_iterable():
    weighting = EqualWeighting()
    weighting.set_tasks(name for name in ("a", "b"))
    assert weighting.task_names == ["a", "b"] and weighting.num_tasks == 2


def test_pcgrad_bool_seed():
    with pytest.raises(TypeError, match="`seed` must be an int"):
        PCGrad(seed=True)


# --- issue 15: bad gradients, non-finite gradients, seeds -------------------

GRADIENT_FUNCTIONS = {
    "check_task_gradients": check_task_gradients,
    "gram_matrix": gram_matrix,
    "mgda_weights": mgda_weights,
    "cagrad_weights": cagrad_weights,
    "cagrad": cagrad,
    "pcgrad_weights": lambda g: pcgrad_weights(g, seed=0),
    "pcgrad": lambda g: pcgrad(g, seed=0),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_FUNCTIONS))
def test_no_tasks_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"`task_gradients` must be a "
                       r"\(num_tasks, num_parameters\).*\(0, 3\)"):
        GRADIENT_FUNCTIONS[name](np.zeros((0, 3)))


@pytest.mark.parametrize("name", sorted(GRADIENT_FUNCTIONS))
@pytest.mark.parametrize("value", [[["a", "b"]], [[True, False]]],
                         ids=["strings", "bools"])
def test_gradients_that_are_no_numbers(name, value):
    with pytest.raises(TypeError, match="`task_gradients` must be a"):
        GRADIENT_FUNCTIONS[name](value)


def test_integer_gradients_are_still_numbers():
    np.testing.assert_allclose(numpy(pcgrad([[1, 0], [-1, 1]])),
                               [0.5, 1.5])


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_gradient_gives_non_finite_update(num_tasks, bad):
    # no MatrixSolve error: a non-finite update, that a NaN-step guard
    # (or a loss-scale optimizer) skips
    gradients = np.random.default_rng(num_tasks).normal(
        size=(num_tasks, 6)).astype("float32")
    gradients[1, 2] = bad
    for update in (lambda g: MGDA()(g), lambda g: CAGrad()(g), cagrad,
                   lambda g: PCGrad()(g), lambda g: pcgrad(g, seed=0)):
        assert not np.all(np.isfinite(numpy(update(gradients))))
    assert not np.all(np.isfinite(numpy(mgda_weights(gradients))))
    assert not np.all(np.isfinite(numpy(cagrad_weights(gradients))))


def test_non_finite_gradient_compiled():
    gradients = base_gradients()["plain"].copy()
    gradients[0, 0] = np.inf
    for update in (mgda_weights, cagrad_weights):
        assert not np.all(np.isfinite(numpy(compiled(update)(gradients))))


@pytest.mark.parametrize("strategy", [EqualWeighting, MGDA, PCGrad, CAGrad])
def test_combine_gradients_needs_one_row_per_task(strategy):
    instance = strategy()
    instance.set_tasks(["a", "b"])
    with pytest.raises(ValueError, match=r"`task_gradients` must have "
                       r"shape \(2, num_parameters\).*\(3, 2\)"):
        instance.combine_gradients(np.ones((3, 2)))
    if strategy is not EqualWeighting:
        with pytest.raises(ValueError, match=r"\(3, 2\)"):
            instance(np.ones((3, 2)))
    assert numpy(instance.combine_gradients(np.ones((2, 2)))).shape == (2,)


BAD_SEEDS = [1.5, "0", True, np.float32(2.0), np.array([1, 2])]


@pytest.mark.parametrize("value", BAD_SEEDS, ids=repr)
def test_bad_seed(value):
    for call in (lambda: task_order(3, seed=value),
                 lambda: pcgrad(base_gradients()["plain"], seed=value),
                 lambda: pcgrad_weights([[1.0], [2.0]], seed=value)):
        with pytest.raises(TypeError, match=r"`seed` must be an int or "
                           r"None .*Received: seed="):
            call()


@pytest.mark.parametrize("value", [*BAD_SEEDS, None,
                                   keras.ops.convert_to_tensor(1.0)],
                         ids=repr)
def test_bad_step(value):
    for call in (lambda: task_order(3, seed=0, step=value),
                 lambda: pcgrad(base_gradients()["plain"], seed=0,
                                step=value),
                 lambda: pcgrad_weights([[1.0], [2.0]], seed=0,
                                        step=value)):
        with pytest.raises(TypeError, match=r"`step` must be an int "
                           r"\(or an integer scalar tensor\). Received: "
                           "step="):
            call()


def test_integer_seeds_and_steps_of_any_kind():
    expected = numpy(task_order(4, seed=2, step=9))
    for seed, step in ((np.int64(2), np.int32(9)),
                       (2, keras.ops.convert_to_tensor(9, "int32")),
                       (keras.ops.convert_to_tensor(2, "int64"),
                        keras.Variable(9, dtype="int64", trainable=False))):
        np.testing.assert_array_equal(
            numpy(task_order(4, seed=seed, step=step)), expected)
    gradients = base_gradients()["plain"]
    step = keras.ops.convert_to_tensor(9, "int32")
    # same order; XLA may round the compiled sums differently
    np.testing.assert_allclose(
        numpy(compiled(lambda g, s: pcgrad(g, seed=2, step=s))(
            gradients, step)),
        numpy(pcgrad(gradients, seed=2, step=9)), rtol=1e-5, atol=1e-6)
