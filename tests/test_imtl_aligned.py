"""IMTL-G and Aligned-MTL against independent float64 NumPy references.

IMTL-G is checked against the paper's closed form (task 1 as reference)
and, for linearly dependent gradients, against the ridge solution
`(M + delta I)^-1 n` with a tiny `delta`; Aligned-MTL against the aligned
gradients built from a singular value decomposition of `G` (not from the
eigendecomposition the code uses). Then degenerate gradients, scales,
float16, non-finite gradients, compiled code, bad inputs, and (TensorFlow)
the three usage modes of the protocol and `.keras` files.
"""

import math

import keras
import numpy as np
import pytest

from mtlbook.weighting.aligned import (
    AlignedMTL, aligned_mtl, aligned_mtl_weights)
from mtlbook.weighting.imtl import IMTLG, imtl_g, imtl_weights

EPS32 = float(np.finfo("float32").eps)
SCALES = [1e-30, 1e-20, 1e-10, 3.7e-3, 1.0, 7.1e4, 1e10, 1e20, 1e30]
ON_JAX = keras.backend.backend() == "jax"
if ON_JAX:  # every shape compiles anew on JAX: fewer repetitions
    SCALES = [1e-30, 3.7e-3, 1e30]


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def compiled(function):
    """`function` compiled as in a training step (tf.function, jax.jit)."""
    if ON_JAX:
        import jax

        return jax.jit(function)
    import tensorflow as tf

    return tf.function(function)


# --- independent float64 references ---------------------------------------

def imtl_paper(gradients):
    """The paper's closed form: `alpha_{2:T} = g_1 U^T (D U^T)^-1`."""
    g = np.asarray(gradients, "float64")
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d, uu = g[0] - g[1:], u[0] - u[1:]
    rest = g[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    return np.concatenate([[1.0 - rest.sum()], rest])


def imtl_ridge(gradients, delta=1e-9):
    """`(M + delta I)^-1 n`, normalized: the limit for dependent rows."""
    g = np.asarray(gradients, "float64")
    gram = g @ g.T
    delta = delta * max(np.trace(gram), 1e-300)
    alpha = np.linalg.solve(gram + delta * np.eye(len(g)),
                            np.linalg.norm(g, axis=1))
    return alpha / alpha.sum()


def aligned_reference(gradients, weights=None, scale_mode="min"):
    """`c` with `c @ G = sum of weighted aligned rows`, from an SVD of `G`.

    The aligned gradients are `sigma U_r W_r^T` (`G = U S W^T`, `r` the
    singular values with `s^2 > T eps s_max^2`); `c = U_r S_r^-1 sigma
    U_r^T w`.
    """
    g = np.asarray(gradients, "float64")
    num_tasks = len(g)
    weights = (np.full(num_tasks, 1.0 / num_tasks) if weights is None
               else np.asarray(weights, "float64"))
    left, singular, _ = np.linalg.svd(g, full_matrices=False)
    squares = singular ** 2
    kept = squares > num_tasks * EPS32 * squares.max()
    if not kept.any():
        return np.zeros(num_tasks)
    left, squares = left[:, kept], squares[kept]
    level = {"min": squares.min(),
             "median": np.sort(squares)[(len(squares) - 1) // 2],
             "rmse": squares.mean()}[scale_mode]
    return left @ (np.sqrt(level / squares) * (left.T @ weights))


def random_gradients(num_tasks, dims, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num_tasks, dims)).astype("float32")


def degenerate_cases():
    g = random_gradients(3, 7, 11)
    return {
        "zero row": np.stack([g[0], 0 * g[0], g[1]]),
        "duplicated": np.stack([g[0], g[0], g[1]]),
        "opposite": np.stack([g[0], -g[0]]),
        "opposite scaled": np.stack([g[0], -2 * g[0], g[1]]),
        "collinear": np.stack([g[0], 3 * g[0]]),
        "more tasks than dims": random_gradients(4, 2, 3),
        "rank deficient": np.stack([g[0], g[1], g[0] + g[1], g[2]]),
    }


# --- IMTL-G ----------------------------------------------------------------

@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_imtl_matches_the_paper_closed_form(num_tasks, seed):
    gradients = random_gradients(num_tasks, 9, seed)
    alpha = numpy(imtl_weights(gradients))
    np.testing.assert_allclose(alpha, imtl_paper(gradients), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(alpha.sum(), 1.0, rtol=1e-6)
    update = numpy(imtl_g(gradients)).astype("float64")
    units = gradients / np.linalg.norm(gradients, axis=1, keepdims=True)
    projections = units @ update
    np.testing.assert_allclose(projections, projections[0], rtol=1e-4)
    np.testing.assert_allclose(
        numpy(IMTLG()(gradients)), num_tasks * update, rtol=1e-6,
        atol=1e-6)


def test_imtl_by_hand():
    gradients = [[1.0, 0.0], [0.0, 2.0]]
    # M = diag(1, 4), n = (1, 2): M^-1 n = (1, 1/2), normalized
    np.testing.assert_allclose(numpy(imtl_weights(gradients)),
                               [2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(numpy(imtl_g(gradients)), [2 / 3, 2 / 3],
                               rtol=1e-6)
    # one task: its own gradient
    np.testing.assert_allclose(numpy(imtl_g([[3.0, -4.0]])), [3.0, -4.0])


@pytest.mark.parametrize("case", sorted(degenerate_cases()))
def test_imtl_degenerate_gradients(case):
    gradients = degenerate_cases()[case]
    alpha = numpy(imtl_weights(gradients))
    assert np.all(np.isfinite(alpha)), case
    np.testing.assert_allclose(alpha, imtl_ridge(gradients), rtol=1e-3,
                               atol=1e-4, err_msg=case)
    update = numpy(imtl_g(gradients)).astype("float64")
    norms = np.linalg.norm(gradients.astype("float64"), axis=1)
    nonzero = norms > 0
    projections = (gradients[nonzero] @ update) / norms[nonzero]
    scale = np.abs(gradients).max() * np.abs(alpha).sum()
    np.testing.assert_allclose(projections, projections[0],
                               atol=1e-5 * scale, err_msg=case)


def test_imtl_degenerate_by_hand():
    g = np.array([1.0, 2.0, -2.0], "float32")
    zero = numpy(imtl_weights(np.stack([g, 0 * g, 2 * g[::-1]])))
    assert zero[1] == 0.0  # a zero gradient takes no part
    np.testing.assert_allclose(
        numpy(imtl_weights(np.stack([g, g]))), [0.5, 0.5], rtol=1e-6)
    # g_2 = -2 g_1: alpha = (2, 1) / 3 and d = 0
    opposite = np.stack([g, -2 * g])
    np.testing.assert_allclose(numpy(imtl_weights(opposite)),
                               [2 / 3, 1 / 3], rtol=1e-5)
    np.testing.assert_allclose(numpy(imtl_g(opposite)), 0.0, atol=1e-5)
    np.testing.assert_allclose(
        numpy(imtl_weights(np.stack([g, 3 * g]))), [0.25, 0.75], rtol=1e-5)
    zeros = np.zeros((3, 4), "float32")
    np.testing.assert_allclose(numpy(imtl_weights(zeros)), 1 / 3)
    np.testing.assert_array_equal(numpy(imtl_g(zeros)), 0.0)


# --- Aligned-MTL -------------------------------------------------------------

@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("num_tasks", [1, 2, 3, 5])
def test_aligned_matches_the_svd_reference(num_tasks, scale_mode):
    gradients = random_gradients(num_tasks, 9, num_tasks)
    weights = numpy(aligned_mtl_weights(gradients, scale_mode=scale_mode))
    np.testing.assert_allclose(
        weights, aligned_reference(gradients, scale_mode=scale_mode),
        rtol=1e-4, atol=1e-5)
    given = np.linspace(0.5, 2.0, num_tasks)
    np.testing.assert_allclose(
        numpy(aligned_mtl(gradients, list(given), scale_mode)),
        aligned_reference(gradients, given, scale_mode) @ gradients,
        rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        numpy(AlignedMTL(scale_mode=scale_mode)(gradients)),
        num_tasks * numpy(aligned_mtl(gradients, scale_mode=scale_mode)),
        rtol=1e-5, atol=1e-6)


def test_aligned_gradients_have_one_singular_value():
    gradients = random_gradients(4, 9, 5)
    rows = np.stack([numpy(aligned_mtl(gradients, list(np.eye(4)[i]), "min"))
                     for i in range(4)])  # row i: the aligned gradient i
    singular = np.linalg.svd(gradients.astype("float64"), compute_uv=False)
    np.testing.assert_allclose(np.linalg.svd(rows, compute_uv=False),
                               singular.min(), rtol=1e-4)


def test_aligned_by_hand():
    gradients = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    # M = diag(1, 4): B = sqrt(1) diag(1, 1/2); c = B (1/2, 1/2)
    np.testing.assert_allclose(numpy(aligned_mtl_weights(gradients)),
                               [0.5, 0.25], rtol=1e-6)
    np.testing.assert_allclose(numpy(aligned_mtl(gradients)), [0.5, 0.5],
                               rtol=1e-6)
    np.testing.assert_allclose(
        numpy(AlignedMTL(task_weights=[2.0, 0.0])(gradients)), [2.0, 0.0],
        rtol=1e-6)


@pytest.mark.parametrize("case", sorted(degenerate_cases()))
def test_aligned_degenerate_gradients(case):
    gradients = degenerate_cases()[case]
    for scale_mode in ("min", "median", "rmse"):
        weights = numpy(aligned_mtl_weights(gradients, scale_mode=scale_mode))
        assert np.all(np.isfinite(weights)), case
        np.testing.assert_allclose(
            weights, aligned_reference(gradients, scale_mode=scale_mode),
            rtol=1e-3, atol=1e-4, err_msg=f"{case} {scale_mode}")


def test_aligned_degenerate_by_hand():
    g = np.array([1.0, 2.0, -2.0], "float32")
    zero = numpy(aligned_mtl_weights(np.stack([g, 0 * g, g[::-1]])))
    assert zero[1] == 0.0  # the zero gradient's direction is dropped
    # duplicated: B = v v^T with v = (1, 1) / sqrt(2), the update is g
    np.testing.assert_allclose(numpy(aligned_mtl(np.stack([g, g]))), g,
                               rtol=1e-5)
    # opposite: B (1, 1) = 0, no update
    np.testing.assert_allclose(numpy(aligned_mtl(np.stack([g, -g]))), 0.0,
                               atol=1e-6)
    zeros = np.zeros((3, 4), "float32")
    np.testing.assert_array_equal(numpy(aligned_mtl_weights(zeros)), 0.0)
    np.testing.assert_array_equal(numpy(aligned_mtl(zeros)), 0.0)


# --- both: scale, float16, non-finite, compiled, bad inputs ---------------

UPDATES = {
    "imtl_g": imtl_g,
    "IMTLG": lambda g: IMTLG()(g),
    "aligned_mtl": aligned_mtl,
    "AlignedMTL": lambda g: AlignedMTL()(g),
}
WEIGHTS = {"imtl_g": imtl_weights, "aligned_mtl": aligned_mtl_weights}


@pytest.mark.parametrize("name", sorted(WEIGHTS))
@pytest.mark.parametrize("case", ["plain", "zero row", "duplicated"])
def test_scale_equivariant(name, case):
    cases = dict(degenerate_cases(), plain=random_gradients(3, 7, 2))
    gradients = cases[case]
    update, weights = UPDATES[name], WEIGHTS[name]
    reference = numpy(update(gradients)).astype("float64")
    assert np.all(np.isfinite(reference)) and np.any(reference != 0)
    for scale in SCALES:
        scaled = (gradients.astype("float64") * scale).astype("float32")
        got = numpy(update(scaled)).astype("float64")
        assert np.all(np.isfinite(got)), scale
        np.testing.assert_allclose(got / scale, reference, rtol=1e-4,
                                   atol=1e-5, err_msg=f"scale {scale}")
        np.testing.assert_allclose(numpy(weights(scaled)),
                                   numpy(weights(gradients)), rtol=1e-4,
                                   atol=1e-5)
    for power in (40, -100, 70):  # powers of two: the same digits
        assert np.array_equal(numpy(update(gradients * 2.0 ** power)),
                              numpy(update(gradients)) * 2.0 ** power)


@pytest.mark.parametrize("name", sorted(UPDATES))
def test_float16_input_is_computed_in_float32(name):
    gradients = random_gradients(3, 7, 4)
    for scale in (1e-4, 1.0, 3e3):  # float16 spans 6e-8 .. 65504
        half = (gradients * scale).astype("float16")
        update = UPDATES[name](half)
        assert keras.backend.standardize_dtype(update.dtype) == "float32"
        update = numpy(update)
        assert np.all(np.isfinite(update)), scale
        np.testing.assert_allclose(
            update, numpy(UPDATES[name](half.astype("float32"))),
            rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("num_tasks", [1, 2, 3, 5])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_gradient_gives_non_finite_update(num_tasks, bad):
    gradients = random_gradients(num_tasks, 6, num_tasks)
    gradients[num_tasks - 1, 2] = bad
    for name, update in UPDATES.items():
        assert not np.all(np.isfinite(numpy(update(gradients)))), name
    for name, weights in WEIGHTS.items():
        assert not np.all(np.isfinite(numpy(weights(gradients)))), name


def test_compiled_matches_eager():
    cases = dict(degenerate_cases(), plain=random_gradients(4, 7, 9))
    for case, gradients in cases.items():
        for name, function in UPDATES.items():
            np.testing.assert_allclose(
                numpy(compiled(function)(gradients)),
                numpy(function(gradients)), rtol=1e-5, atol=1e-6,
                err_msg=f"{name} {case}")
    bad = random_gradients(3, 6, 1)
    bad[0, 0] = np.nan
    for name, function in UPDATES.items():
        assert not np.all(np.isfinite(numpy(compiled(function)(bad)))), name


FUNCTIONS = {
    "imtl_weights": imtl_weights, "imtl_g": imtl_g,
    "aligned_mtl_weights": aligned_mtl_weights, "aligned_mtl": aligned_mtl,
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_bad_gradients(name):
    function = FUNCTIONS[name]
    with pytest.raises(ValueError, match=r"`task_gradients` must be a "
                       r"\(num_tasks, num_parameters\).*\(0, 3\)"):
        function(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"task_gradients.shape=\(3,\)"):
        function(np.zeros(3))
    for value in ([["a", "b"]], [[True, False]]):
        with pytest.raises(TypeError, match="`task_gradients` must be a"):
            function(value)
    # integers are numbers
    assert np.all(np.isfinite(numpy(function([[1, 0], [0, 2]]))))


@pytest.mark.parametrize("value", [
    [1.0, math.nan], [1.0, math.inf], [True, 1.0], ["a", 1.0], [], 3, True,
    "ab", [1.0, 2.0, 3.0],
], ids=repr)
def test_bad_task_weights(value):
    with pytest.raises(ValueError, match=r"`task_weights` must be None or"
                       r".*Received: task_weights="):
        aligned_mtl([[1.0, 0.0], [0.0, 2.0]], value)
    if not isinstance(value, list) or len(value) != 3:
        with pytest.raises(ValueError, match="`task_weights`"):
            AlignedMTL(task_weights=value)


@pytest.mark.parametrize("value", ["max", "", None, 1, "MIN"])
def test_bad_scale_mode(value):
    message = r"`scale_mode` must be one of .*Received: scale_mode="
    with pytest.raises(ValueError, match=message):
        aligned_mtl_weights([[1.0]], scale_mode=value)
    with pytest.raises(ValueError, match=message):
        AlignedMTL(scale_mode=value)


def test_task_weights_must_match_the_tasks():
    with pytest.raises(ValueError, match=r"one per task \(3\)"):
        AlignedMTL(task_weights=[1.0, 2.0], num_tasks=3)
    strategy = AlignedMTL(task_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"one per task \(3\)"):
        strategy.set_tasks(["a", "b", "c"])
    strategy = AlignedMTL(task_weights=[1.0, np.float32(2.0)])
    strategy.set_tasks(["a", "b"])
    assert strategy.get_config()["task_weights"] == [1.0, 2.0]


@pytest.mark.parametrize("factory", [IMTLG, AlignedMTL])
def test_layer_needs_one_row_per_task(factory):
    strategy = factory()
    strategy.set_tasks(["a", "b"])
    with pytest.raises(ValueError, match=r"`task_gradients` must have "
                       r"shape \(2, num_parameters\).*\(3, 2\)"):
        strategy.combine_gradients(np.ones((3, 2)))
    assert numpy(strategy.combine_gradients(np.ones((2, 2)))).shape == (2,)


@pytest.mark.parametrize("strategy", [
    IMTLG(), IMTLG(num_tasks=3), AlignedMTL(),
    AlignedMTL(task_weights=[1.0, 0.5], scale_mode="rmse"),
], ids=repr)
def test_config_round_trip(strategy):
    config = strategy.get_config()
    restored = type(strategy).from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(strategy)
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is type(strategy)
    assert again.get_config() == config


# --- the protocol's usage modes and `.keras` files (TensorFlow) ------------

PROTOCOL_FACTORIES = {
    "imtl": IMTLG,
    "aligned": AlignedMTL,
    "aligned_weighted": lambda: AlignedMTL(task_weights=[1.0, 0.5],
                                           scale_mode="median"),
}


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", sorted(PROTOCOL_FACTORIES))
def test_three_usage_modes(monkeypatch, name):
    import test_protocol

    monkeypatch.setitem(test_protocol.FACTORIES, name,
                        PROTOCOL_FACTORIES[name])
    # fit and a hand-written tape loop end with the same weights; the
    # compute_loss override refuses a gradient method
    test_protocol.test_fit_and_tape_loop_agree(name)
    test_protocol.test_compute_loss_override_agrees_or_refuses(name)
    # the method changed the training: not equal weighting's weights
    got = test_protocol.run_fit(name)
    equal = test_protocol.run_fit("equal")
    assert not np.allclose(got["trunk/kernel"], equal["trunk/kernel"])


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", sorted(PROTOCOL_FACTORIES))
def test_keras_file_round_trip_and_resume(tmp_path, name):
    from test_training import make_data, make_model

    x, y = make_data()
    fit = dict(batch_size=16, verbose=0, shuffle=False)
    reference = make_model(PROTOCOL_FACTORIES[name](), optimizer="adam")
    reference.fit(x, y, epochs=4, **fit)

    model = make_model(PROTOCOL_FACTORIES[name](), optimizer="adam")
    model.fit(x, y, epochs=2, **fit)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.strategy) is type(model.strategy)
    assert restored.strategy.get_config() == model.strategy.get_config()
    np.testing.assert_allclose(restored.predict(x, verbose=0)["b"],
                               model.predict(x, verbose=0)["b"], rtol=1e-6)
    restored.fit(x, y, epochs=2, **fit)  # resumed: as the 4-epoch run
    for a, b in zip(reference.weights, restored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=a.path)
