"""Nash-MTL (mtlbook.weighting.nash): the bargaining weights and the layer.

The weights are checked against an independent float64 NumPy solver
(Newton's method with a backtracking line search on `f(alpha)` in the
gradients' own scale, its fixed point certified in the test), on random
and degenerate gradients; then the scale invariance of the update, the
clipping, float16, non-finite gradients, compiled calls, the layer's
state (`update_weights_every`, `.keras`, resuming) and the three usage
modes of the protocol.
"""

import keras
import numpy as np
import pytest

from mtlbook.weighting.nash import NashMTL, nash_mtl, nash_mtl_weights
from test_weighting_numerics import SCALES, compiled, numpy

RIDGE = 1e-4


def reference_weights(task_gradients, ridge=RIDGE):
    """`alpha` with `((M + ridge diag(|g_i|^2)) alpha)_i = 1 / alpha_i`.

    float64 Newton with Armijo backtracking on
    `f(alpha) = 1/2 alpha^T A alpha - sum log alpha_i`, `A = M + ridge
    diag(|g_i|^2)`, on the tasks with a non-zero gradient (the others
    get 0).
    """
    gradients = np.asarray(task_gradients, "float64")
    squared_norms = np.sum(gradients * gradients, axis=1)
    keep = squared_norms > 0
    matrix = (gradients @ gradients.T + ridge * np.diag(squared_norms))[
        np.ix_(keep, keep)]

    def objective(alpha):
        return 0.5 * alpha @ matrix @ alpha - np.log(alpha).sum()

    alpha = 1.0 / np.sqrt(np.diag(matrix))
    for _ in range(300):
        gradient = matrix @ alpha - 1.0 / alpha
        step = -np.linalg.solve(matrix + np.diag(alpha ** -2.0), gradient)
        length = 1.0
        while np.any(alpha + length * step <= 0) or objective(
            alpha + length * step
        ) > objective(alpha) + 1e-4 * length * gradient @ step:
            length /= 2
        alpha = alpha + length * step
    residual = alpha * (matrix @ alpha) - 1.0
    assert np.abs(residual).max() < 1e-6, residual  # a certified fixed point
    weights = np.zeros(len(gradients))
    weights[keep] = alpha
    return weights


def random_cases(seed=0, count=12):
    """Random gradients: full rank, and `T` rows in a 2-dim subspace."""
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        num_tasks = int(rng.integers(2, 7))
        size = int(rng.integers(num_tasks, 30))
        if index % 2:
            gradients = rng.normal(size=(num_tasks, 2)) @ rng.normal(
                size=(2, size))
        else:
            gradients = rng.normal(size=(num_tasks, size))
        cases.append(gradients.astype("float32"))
    return cases


DEGENERATE = {
    "zero_row": [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.5, -1.0, 3.0]],
    "duplicated": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 1.0, 0.0]],
    "opposite": [[1.0, 2.0], [-1.0, -2.0]],
    "opposite_and_orthogonal": [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0],
                                [0.0, 3.0, 0.0]],
    "nearly_opposite": [[1.0, 0.0], [-1.0, 1e-3]],
    "three_in_a_plane": [[1.0, 0.0, 0.0], [-0.5, 0.8, 0.0],
                         [-0.5, -0.8, 0.0]],
    "one_task": [[3.0, -4.0]],
}


def update_of(gradients, alpha):
    return alpha @ np.asarray(gradients, "float64")


@pytest.mark.parametrize(
    "gradients", random_cases(), ids=[f"case{i}" for i in range(12)])
def test_weights_match_the_reference_on_random_gradients(gradients):
    got = numpy(nash_mtl_weights(gradients))
    want = reference_weights(gradients)
    assert got.dtype == np.float32
    # the update they give agrees to float32 precision
    np.testing.assert_allclose(update_of(gradients, got),
                               update_of(gradients, want), atol=1e-4)
    matrix = gradients.astype("float64") @ gradients.T.astype("float64")
    condition = np.linalg.cond(matrix)
    if condition < 1e3:  # well conditioned: the weights and fixed point
        np.testing.assert_allclose(got, want, rtol=1e-4)
        squared = np.sum(gradients.astype("float64") ** 2, axis=1)
        fixed = got * ((matrix + RIDGE * np.diag(squared)) @ got)
        np.testing.assert_allclose(fixed, 1.0, atol=1e-4)


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_gradients(name):
    gradients = np.asarray(DEGENERATE[name], "float32")
    got = numpy(nash_mtl_weights(gradients))
    want = reference_weights(gradients)
    assert np.all(np.isfinite(got)) and np.all(got >= 0.0)
    np.testing.assert_allclose(update_of(gradients, got),
                               update_of(gradients, want), atol=1e-4)
    update = numpy(nash_mtl(gradients, max_norm=0.0))
    np.testing.assert_allclose(update, update_of(gradients, want),
                               atol=1e-4)


def test_orthogonal_gradients_by_hand():
    # C = I: b_i^2 (1 + ridge) = 1, alpha_i = b_i / |g_i|
    gradients = [[3.0, 0.0, 0.0], [0.0, 0.0, -0.5]]
    alpha = numpy(nash_mtl_weights(gradients, ridge=0.25))
    np.testing.assert_allclose(alpha, [1 / 3, 2.0] / np.sqrt(1.25),
                               rtol=1e-6)
    update = numpy(nash_mtl(gradients, max_norm=0.0, ridge=0.0))
    np.testing.assert_allclose(update, [1.0, 0.0, -1.0], rtol=1e-6)


def test_two_tasks_at_sixty_degrees_by_hand():
    # unit gradients, cosine 1/2: b^2 (1 + 1/2) = 1 by symmetry
    gradients = [[2.0, 0.0], [0.5, 0.5 * np.sqrt(3.0)]]
    alpha = numpy(nash_mtl_weights(gradients, ridge=0.0))
    b = np.sqrt(2.0 / 3.0)
    np.testing.assert_allclose(alpha, [b / 2.0, b], rtol=1e-5)


def test_zero_gradient_task_gets_zero_and_the_others_bargain_alone():
    gradients = np.asarray(DEGENERATE["zero_row"], "float32")
    alpha = numpy(nash_mtl_weights(gradients))
    assert alpha[1] == 0.0
    alone = numpy(nash_mtl_weights(gradients[[0, 2]]))
    np.testing.assert_allclose(alpha[[0, 2]], alone, rtol=1e-6)
    zeros = numpy(nash_mtl(np.zeros((3, 4), "float32")))
    np.testing.assert_array_equal(zeros, np.zeros(4))


def test_opposite_gradients_give_no_update():
    # zero is a positive combination: no direction helps both tasks; with
    # the ridge the weights stay finite (1 / sqrt(ridge)) and the update
    # vanishes
    gradients = np.asarray(DEGENERATE["opposite"], "float32")
    for ridge in (1e-2, 1e-4, 1e-6):
        alpha = numpy(nash_mtl_weights(gradients, ridge=ridge))
        np.testing.assert_allclose(
            alpha * np.sqrt(5.0), 1.0 / np.sqrt(ridge), rtol=1e-3)
        update = numpy(nash_mtl(gradients, max_norm=0.0, ridge=ridge))
        np.testing.assert_allclose(update, 0.0, atol=1e-6 / np.sqrt(ridge))


def test_update_norm_is_the_square_root_of_the_task_count():
    # at the solution |d|^2 = alpha^T M alpha = T - ridge |b|^2
    for gradients in random_cases(seed=3, count=6)[::2]:
        num_tasks = len(gradients)
        update = numpy(nash_mtl(gradients, max_norm=0.0, ridge=0.0))
        np.testing.assert_allclose(np.linalg.norm(update),
                                   np.sqrt(num_tasks), rtol=1e-4)


@pytest.mark.parametrize("max_norm", [0.5, 1.0, 100.0])
def test_max_norm_clips_the_update(max_norm):
    gradients = random_cases(seed=4, count=1)[0]
    free = numpy(nash_mtl(gradients, max_norm=0.0))
    clipped = numpy(nash_mtl(gradients, max_norm=max_norm))
    factor = min(1.0, max_norm / np.linalg.norm(free))
    np.testing.assert_allclose(clipped, factor * free, rtol=1e-6,
                               atol=1e-7)


def test_each_task_scale_leaves_the_update_unchanged():
    # g_i -> s_i g_i: alpha_i -> alpha_i / s_i, d unchanged; powers of
    # two are exact, so bit for bit
    gradients = random_cases(seed=5, count=1)[0]
    num_tasks = len(gradients)
    base = numpy(nash_mtl(gradients))
    alpha = numpy(nash_mtl_weights(gradients))
    rng = np.random.default_rng(0)
    for _ in range(3):
        powers = 2.0 ** rng.integers(-90, 90, size=num_tasks)
        scaled = (gradients * powers[:, None]).astype("float32")
        np.testing.assert_array_equal(numpy(nash_mtl(scaled)), base)
        np.testing.assert_allclose(numpy(nash_mtl_weights(scaled)) * powers,
                                   alpha, rtol=1e-6)
    for scale in SCALES:
        scaled = (gradients.astype("float64") * scale).astype("float32")
        np.testing.assert_allclose(numpy(nash_mtl(scaled)), base,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            numpy(nash_mtl_weights(scaled)) * scale, alpha, rtol=1e-5)


def test_float16_gives_float32():
    gradients = random_cases(seed=6, count=1)[0].astype("float16")
    for function in (nash_mtl, nash_mtl_weights):
        got = function(keras.ops.convert_to_tensor(gradients))
        assert keras.backend.standardize_dtype(got.dtype) == "float32"
        np.testing.assert_array_equal(
            numpy(got), numpy(function(gradients.astype("float32"))))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradient_gives_a_non_finite_update(bad):
    gradients = random_cases(seed=7, count=1)[0].copy()
    gradients[0, 1] = bad
    assert not np.all(np.isfinite(numpy(nash_mtl(gradients))))
    assert np.all(np.isnan(numpy(nash_mtl_weights(gradients))))
    layer = NashMTL(num_tasks=len(gradients))
    layer.build((len(gradients),))
    layer.alpha.assign(np.arange(1.0, len(gradients) + 1.0))
    assert not np.all(np.isfinite(numpy(layer(gradients))))
    # the kept weights are not replaced by NaNs
    np.testing.assert_array_equal(numpy(layer.task_weights()),
                                  np.arange(1.0, len(gradients) + 1.0))


def test_compiled_equals_eager():
    gradients = random_cases(seed=8, count=1)[0]
    function = compiled(lambda g: (nash_mtl(g), nash_mtl_weights(g)))
    eager = (nash_mtl(gradients), nash_mtl_weights(gradients))
    for got, want in zip(function(gradients), eager):
        np.testing.assert_allclose(numpy(got), numpy(want), rtol=1e-6,
                                   atol=1e-7)


def test_layer_is_the_function_and_keeps_the_weights():
    gradients = random_cases(seed=9, count=1)[0]
    layer = NashMTL(max_norm=0.5)
    layer.set_tasks([f"t{i}" for i in range(len(gradients))])
    np.testing.assert_array_equal(numpy(layer.task_weights()), 1.0)
    update = layer.combine_gradients(gradients, step=0)
    np.testing.assert_allclose(numpy(update),
                               numpy(nash_mtl(gradients, max_norm=0.5)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(numpy(layer.task_weights()),
                               numpy(nash_mtl_weights(gradients)),
                               rtol=1e-6)


def test_update_weights_every_reuses_the_weights_between_solves():
    first = random_cases(seed=10, count=1)[0]
    rng = np.random.default_rng(1)
    layer = NashMTL(max_norm=0.0, update_weights_every=3)
    layer.set_tasks([f"t{i}" for i in range(len(first))])
    solved = numpy(nash_mtl_weights(first))
    for step in range(7):
        gradients = first if step == 0 else rng.normal(
            size=first.shape).astype("float32")
        update = numpy(layer(gradients, step=step))
        if step % 3 == 0:
            solved = numpy(nash_mtl_weights(gradients))
        np.testing.assert_allclose(numpy(layer.task_weights()), solved,
                                   rtol=1e-6)
        np.testing.assert_allclose(update, solved @ gradients, rtol=1e-5,
                                   atol=1e-6)
    # a step tensor, as the optimizer's counter inside a compiled step
    layer(first, step=keras.ops.convert_to_tensor(9, "int64"))
    np.testing.assert_allclose(numpy(layer.task_weights()),
                               numpy(nash_mtl_weights(first)), rtol=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    ({"max_norm": -1.0}, "max_norm"), ({"max_norm": np.nan}, "max_norm"),
    ({"max_norm": True}, "max_norm"), ({"max_norm": "1"}, "max_norm"),
    ({"ridge": -1e-3}, "ridge"), ({"ridge": np.inf}, "ridge"),
    ({"ridge": False}, "ridge"),
    ({"iterations": 0}, "iterations"), ({"iterations": 2.0}, "iterations"),
    ({"iterations": True}, "iterations"),
    ({"update_weights_every": 0}, "update_weights_every"),
    ({"update_weights_every": True}, "update_weights_every"),
    ({"num_tasks": 0}, "num_tasks"),
])
def test_bad_hyperparameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        NashMTL(**kwargs)
    function_kwargs = {k: v for k, v in kwargs.items()
                       if k in ("max_norm", "ridge", "iterations")}
    if function_kwargs:
        with pytest.raises(ValueError, match=f"Received: {name}="):
            nash_mtl([[1.0, 0.0]], **function_kwargs)
    if function_kwargs and name != "max_norm":
        with pytest.raises(ValueError, match=f"Received: {name}="):
            nash_mtl_weights([[1.0, 0.0]], **function_kwargs)


@pytest.mark.parametrize("gradients, error", [
    ([1.0, 2.0], ValueError), (np.zeros((0, 3)), ValueError),
    ([["a", "b"]], TypeError), ([[True, False]], TypeError),
])
def test_bad_gradients_raise(gradients, error):
    for function in (nash_mtl, nash_mtl_weights):
        with pytest.raises(error, match="task_gradients"):
            function(gradients)


def test_layer_refuses_a_different_number_of_tasks():
    layer = NashMTL()
    layer.set_tasks(["a", "b"])
    with pytest.raises(ValueError, match="task_gradients"):
        layer.combine_gradients(np.ones((3, 4), "float32"))


def test_config_round_trip():
    layer = NashMTL(max_norm=2.0, update_weights_every=4, ridge=1e-3,
                    iterations=12, num_tasks=3)
    copy = NashMTL.from_config(layer.get_config())
    for name in ("max_norm", "update_weights_every", "ridge", "iterations",
                 "num_tasks"):
        assert getattr(copy, name) == getattr(layer, name)


# --- training: the protocol's three modes, saving, resuming ---------------

@pytest.mark.tensorflow
def test_fit_and_tape_loop_agree(monkeypatch):
    import test_protocol

    monkeypatch.setitem(test_protocol.FACTORIES, "nash_mtl",
                        lambda: NashMTL(update_weights_every=2))
    test_protocol.test_fit_and_tape_loop_agree("nash_mtl")
    # a gradient method: the compute_loss subclass refuses it
    test_protocol.test_compute_loss_override_agrees_or_refuses("nash_mtl")


@pytest.mark.tensorflow
def test_fit_step_is_the_function():
    from test_training import flat, make_data, make_model, task_gradients

    x, y = make_data(32, seed=1)
    strategy = NashMTL(max_norm=0.3)
    model = make_model(strategy, optimizer=keras.optimizers.SGD(0.1))
    before = [v.numpy().copy() for v in model.network.trainable_variables]
    grads = task_gradients(model, x, y)
    shared = np.stack([flat(grads[t][:2]) for t in ("a", "b")])
    expected = numpy(nash_mtl(shared, max_norm=0.3))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    after = [v.numpy() for v in model.network.trainable_variables]
    step = np.concatenate([(b - a).ravel() for b, a in zip(before, after)])
    np.testing.assert_allclose(step[:expected.size], 0.1 * expected,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(numpy(strategy.task_weights()),
                               numpy(nash_mtl_weights(shared)), rtol=1e-4)


@pytest.mark.tensorflow
def test_save_and_load_keeps_the_weights(tmp_path):
    from test_training import make_data, make_model

    x, y = make_data()
    model = make_model(NashMTL(update_weights_every=3), optimizer="adam")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    alpha = numpy(model.strategy.task_weights())
    assert not np.allclose(alpha, 1.0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.strategy) is NashMTL
    assert restored.strategy.update_weights_every == 3
    np.testing.assert_array_equal(numpy(restored.strategy.task_weights()),
                                  alpha)
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0)


@pytest.mark.tensorflow
def test_backup_and_restore_resumes_exactly(tmp_path):
    # 64 samples in batches of 16: 4 steps an epoch, solves every 3 steps,
    # so the reused weights cross the interruption
    from test_training import _Interrupt, make_data, make_model

    x, y = make_data()
    fit = dict(batch_size=16, epochs=4, verbose=0, shuffle=False)
    reference = make_model(NashMTL(update_weights_every=3), optimizer="adam")
    reference.fit(x, y, **fit)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = make_model(NashMTL(update_weights_every=3),
                             optimizer="adam")
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(x, y, callbacks=[backup, _Interrupt()], **fit)
    resumed = make_model(NashMTL(update_weights_every=3), optimizer="adam")
    resumed.fit(x, y, callbacks=[backup], **fit)
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6,
                                   atol=1e-7)
    np.testing.assert_allclose(numpy(resumed.strategy.task_weights()),
                               numpy(reference.strategy.task_weights()),
                               rtol=1e-6)
