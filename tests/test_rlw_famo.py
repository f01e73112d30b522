"""Random Loss Weighting and FAMO (issue 17).

RLW's draws against an independent NumPy implementation of the hash and
of Box-Muller, and their distribution; FAMO's weights and logit updates
against a NumPy float64 version of the official update (Adam on the
logits) over three steps by hand; degenerate and extreme losses; bad
hyper-parameters; the state in `.keras` files and a run resumed by
`BackupAndRestore`; and the protocol's three usage modes (TensorFlow).
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from mtlbook.weighting.famo import FAMO, famo_logit_gradient, famo_weights
from mtlbook.weighting.rlw import (
    RandomLossWeighting, random_loss_weights, standard_normal_draw,
)

INF, NAN = float("inf"), float("nan")
MASK = 0xFFFFFFFF


def numpy(x):
    return ops.convert_to_numpy(x)


def built(strategy, num_tasks=2):
    strategy.set_tasks([f"t{i}" for i in range(num_tasks)])
    return strategy


# -- independent references ---------------------------------------------------

def lowbias32(value):
    """The 32-bit hash on Python ints."""
    value ^= value >> 16
    value = (value * 0x7FEB352D) & MASK
    value ^= value >> 15
    value = (value * 0x846CA68B) & MASK
    return value ^ (value >> 16)


def normal_reference(num_tasks, seed, step):
    """Box-Muller normals from the hashed keys, in float64."""
    base = lowbias32((seed + lowbias32(step % 2 ** 32)) & MASK)
    keys = [lowbias32((base + k) & MASK) for k in range(2 * num_tasks)]
    uniform = (np.array([k >> 8 for k in keys], "float64") + 0.5) / 2 ** 24
    uniform = uniform.reshape(num_tasks, 2)
    return np.sqrt(-2.0 * np.log(uniform[:, 0])) * np.cos(
        2.0 * np.pi * uniform[:, 1])


def softmax(x):
    x = np.asarray(x, "float64")
    e = np.exp(x - x.max())
    return e / e.sum()


def famo_reference(losses_per_step, learning_rate=0.025, weight_decay=0.01,
                   epsilon=1e-8):
    """FAMO in float64 NumPy: `(logits, weights used)` after each step.

    The weights of step `t` are `c z_i / D_i`; after the step the logits
    take one PyTorch-style Adam step (L2 decay added to the gradient) on
    `J^T delta + gamma xi` with `delta = log D(t-1) - log D(t)`.
    """
    num_tasks = len(losses_per_step[0])
    xi = np.zeros(num_tasks)
    m, v, count, previous = np.zeros(num_tasks), np.zeros(num_tasks), 0, None
    logits, used = [], []
    for losses in losses_per_step:
        d = np.asarray(losses, "float64") + epsilon
        z = softmax(xi)
        c = 1.0 / np.sum(z / d)
        used.append(c * z / d)
        if previous is not None:
            delta = np.log(previous) - np.log(d)
            jacobian = np.diag(z) - np.outer(z, z)
            gradient = jacobian.T @ delta + weight_decay * xi
            count += 1
            m = 0.9 * m + 0.1 * gradient
            v = 0.999 * v + 0.001 * gradient ** 2
            m_hat, v_hat = m / (1 - 0.9 ** count), v / (1 - 0.999 ** count)
            xi = xi - learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)
        previous = d
        logits.append(xi.copy())
    return logits, used


# -- RLW --------------------------------------------------------------------

@pytest.mark.parametrize("num_tasks,seed,step", [
    (1, 0, 0), (2, 0, 0), (3, 7, 1), (5, 2 ** 32 - 1, 12345),
    (4, 123, 2 ** 32 + 5), (8, 99, 2 ** 31),
])
def test_standard_normal_draw_matches_numpy(num_tasks, seed, step):
    got = numpy(standard_normal_draw(num_tasks, seed, step))
    assert got.dtype == np.float32 and got.shape == (num_tasks,)
    np.testing.assert_allclose(got, normal_reference(num_tasks, seed, step),
                               rtol=1e-5, atol=1e-5)


def test_random_loss_weights_by_hand_and_on_the_scaled_simplex():
    # two tasks: w = 2 softmax(z) = 2 / (1 + exp(z_1 - z_0)) for task 0
    z = normal_reference(2, 0, 0)
    weights = numpy(random_loss_weights(2, seed=0, step=0))
    np.testing.assert_allclose(weights[0], 2.0 / (1.0 + np.exp(z[1] - z[0])),
                               rtol=1e-5)
    for num_tasks in (1, 2, 3, 7):
        for step in range(20):
            weights = numpy(random_loss_weights(num_tasks, 3, step))
            assert np.all(weights > 0.0)
            np.testing.assert_allclose(weights.sum(), num_tasks, rtol=1e-5)
            np.testing.assert_allclose(
                weights, num_tasks * softmax(normal_reference(
                    num_tasks, 3, step)), rtol=1e-5)


def test_draws_are_standard_normal_and_independent():
    draws = np.stack([numpy(standard_normal_draw(4, 11, t))
                      for t in range(2000)])
    flat = draws.ravel()  # 8000 draws
    assert abs(flat.mean()) < 4.0 / math.sqrt(flat.size)
    assert abs(flat.var() - 1.0) < 4.0 * math.sqrt(2.0 / flat.size)
    # the normal CDF at -1, 0, 1 (within four standard errors)
    for x, p in ((-1.0, 0.158655), (0.0, 0.5), (1.0, 0.841345)):
        share = np.mean(flat <= x)
        assert abs(share - p) < 4.0 * math.sqrt(p * (1 - p) / flat.size)
    # tasks and consecutive steps are uncorrelated
    correlation = np.corrcoef(np.concatenate(
        [draws[1:], draws[:-1]], axis=1).T)
    off_diagonal = correlation[~np.eye(8, dtype=bool)]
    assert np.abs(off_diagonal).max() < 4.0 / math.sqrt(len(draws))


def test_seed_and_step_choose_the_draw():
    first = numpy(standard_normal_draw(3, 1, 5))
    np.testing.assert_array_equal(first, numpy(standard_normal_draw(3, 1, 5)))
    np.testing.assert_array_equal(
        first, numpy(standard_normal_draw(3, 1, ops.convert_to_tensor(
            5, "int32"))))
    assert not np.allclose(first, numpy(standard_normal_draw(3, 2, 5)))
    assert not np.allclose(first, numpy(standard_normal_draw(3, 1, 6)))


def test_random_loss_weights_compiled_with_a_tensor_step():
    from test_weighting_numerics import compiled

    function = compiled(lambda step: random_loss_weights(3, 4, step))
    for step in (0, 1, 1000):
        np.testing.assert_allclose(
            numpy(function(ops.convert_to_tensor(step, "int32"))),
            numpy(random_loss_weights(3, 4, step)), rtol=1e-6)


def test_rlw_layer_steps_through_the_draws():
    strategy = built(RandomLossWeighting(seed=5), 3)
    losses = np.array([1.0, 2.0, 4.0], "float32")
    for step in range(4):
        weights = numpy(random_loss_weights(3, 5, step))
        np.testing.assert_allclose(numpy(strategy.task_weights()), weights,
                                   rtol=1e-6)
        np.testing.assert_allclose(numpy(strategy(losses)),
                                   np.sum(weights * losses), rtol=1e-6)
        np.testing.assert_allclose(
            numpy(strategy.combine_losses(losses)), np.sum(weights * losses),
            rtol=1e-6)
        strategy.update_step(losses)
        assert int(numpy(strategy.steps_seen)) == step + 1


@pytest.mark.parametrize("kwargs,error", [
    ({"seed": True}, TypeError), ({"seed": 1.0}, TypeError),
    ({"seed": "0"}, TypeError), ({"seed": None}, TypeError),
    ({"seed": -1}, ValueError), ({"seed": 2 ** 32}, ValueError),
    ({"num_tasks": 0}, ValueError), ({"num_tasks": True}, ValueError),
])
def test_rlw_bad_arguments(kwargs, error):
    name = next(iter(kwargs))
    with pytest.raises(error, match=f"`{name}`.*Received: {name}="):
        RandomLossWeighting(**kwargs)


@pytest.mark.parametrize("args,error,name", [
    ((0, 0, 0), ValueError, "num_tasks"), ((True, 0, 0), ValueError,
                                           "num_tasks"),
    ((2, -3, 0), ValueError, "seed"), ((2, 0.5, 0), TypeError, "seed"),
    ((2, 0, -1), ValueError, "step"), ((2, 0, True), TypeError, "step"),
    ((2, 0, 1.5), TypeError, "step"), ((2, 0, "1"), TypeError, "step"),
    ((2, 0, np.ones(2, "int32")), TypeError, "step"),
    ((2, 0, np.float32(1.0)), TypeError, "step"),
])
def test_random_loss_weights_bad_arguments(args, error, name):
    with pytest.raises(error, match=f"`{name}`.*Received: {name}="):
        random_loss_weights(*args)


def test_rlw_before_set_tasks_and_wrong_losses():
    strategy = RandomLossWeighting()
    for method in ("task_weights", "combine_losses", "update_step"):
        with pytest.raises(ValueError, match="set_tasks"):
            getattr(strategy, method)(*([] if method == "task_weights"
                                        else [[1.0, 2.0]]))
    strategy = built(RandomLossWeighting())
    with pytest.raises(ValueError, match="task_losses"):
        strategy.combine_losses([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="task_losses"):
        strategy.update_step([1.0])


def test_rlw_state_in_weights_and_config():
    strategy = built(RandomLossWeighting(seed=9))
    for _ in range(5):
        strategy.update_step([1.0, 1.0])
    clone = RandomLossWeighting.from_config(strategy.get_config())
    clone.set_tasks(strategy.task_names)
    clone.set_weights(strategy.get_weights())
    assert clone.seed == 9 and int(numpy(clone.steps_seen)) == 5
    np.testing.assert_array_equal(numpy(clone.task_weights()),
                                  numpy(strategy.task_weights()))


# -- FAMO -------------------------------------------------------------------

def test_famo_weights_by_hand():
    # z = (1/2, 1/2), L = (1, 3): c = 1 / (1/2 + 1/6) = 3/2, w = (3/4, 1/4)
    np.testing.assert_allclose(numpy(famo_weights([0.0, 0.0], [1.0, 3.0])),
                               [0.75, 0.25], rtol=1e-6)
    # z = (e/(1+e), 1/(1+e)), L = (2, 1): w proportional to (e/2, 1)
    e = math.e
    np.testing.assert_allclose(
        numpy(famo_weights([1.0, 0.0], [2.0, 1.0], epsilon=0.0)),
        [e / (e + 2.0), 2.0 / (e + 2.0)], rtol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_famo_weights_match_numpy_and_sum_to_one(seed):
    rng = np.random.default_rng(seed)
    num_tasks = int(rng.integers(1, 7))
    logits = rng.normal(size=num_tasks).astype("float32")
    losses = np.exp(rng.normal(scale=3.0, size=num_tasks)).astype("float32")
    z = softmax(logits)
    d = losses.astype("float64") + 1e-8
    expected = (z / d) / np.sum(z / d)
    got = numpy(famo_weights(logits, losses))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(got >= 0.0)
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1.0, 1e10, 1e30])
def test_famo_is_scale_free_and_finite_at_extremes(scale):
    logits = np.array([0.3, -0.2, 0.0], "float32")
    losses = np.array([0.5, 2.0, 1.0], "float32")
    reference = numpy(famo_weights(logits, losses, epsilon=0.0))
    got = numpy(famo_weights(logits, losses * scale, epsilon=0.0))
    np.testing.assert_allclose(got, reference, rtol=1e-5)
    gradient = numpy(famo_logit_gradient(
        logits, losses * scale, losses * scale * 0.5, 0.0, epsilon=0.0))
    np.testing.assert_allclose(gradient, 0.0, atol=1e-6)  # same fall
    # losses 60 orders of magnitude apart: finite, all weight on the least
    spread = numpy(famo_weights([0.0, 0.0], [1e-30, 1e30], epsilon=0.0))
    np.testing.assert_allclose(spread, [1.0, 0.0], atol=1e-7)


def test_famo_combined_loss_gradient_is_the_paper_direction():
    # d total / d L_i = w_i = c z_i / L_i, so the update is
    # c sum_i z_i grad(log L_i)
    strategy = built(FAMO(epsilon=0.0), 3)
    strategy.logits.assign([0.5, -1.0, 0.25])
    losses = np.array([0.4, 3.0, 1.5], "float32")
    z = softmax([0.5, -1.0, 0.25])
    c = 1.0 / np.sum(z / losses)
    if keras.backend.backend() == "jax":
        import jax

        gradient = jax.grad(strategy.combine_losses)(losses)
    else:
        import tensorflow as tf

        tensor = tf.constant(losses)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            total = strategy.combine_losses(tensor)
        gradient = tape.gradient(total, tensor)
    np.testing.assert_allclose(numpy(gradient), c * z / losses, rtol=1e-5)
    np.testing.assert_allclose(
        numpy(strategy.combine_losses(losses)), c * np.sum(z), rtol=1e-5)


def test_famo_logit_gradient_by_hand():
    # z = (1/2, 1/2), delta = (log 2, 0): g = z (delta - z.delta)
    # = (log 2 / 4, -log 2 / 4)
    quarter = math.log(2.0) / 4
    np.testing.assert_allclose(
        numpy(famo_logit_gradient([0.0, 0.0], [1.0, 1.0], [0.5, 1.0])),
        [quarter, -quarter], rtol=1e-5)
    # the decay adds gamma xi; equal falls give only the decay
    np.testing.assert_allclose(
        numpy(famo_logit_gradient([1.0, -1.0], [2.0, 4.0], [1.0, 2.0],
                                  weight_decay=0.1)),
        [0.1, -0.1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_famo_logit_gradient_matches_the_jacobian(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=4)
    previous, current = np.exp(rng.normal(size=(2, 4)))
    z = softmax(logits)
    delta = np.log(previous + 1e-8) - np.log(current + 1e-8)
    expected = (np.diag(z) - np.outer(z, z)).T @ delta + 0.01 * logits
    got = famo_logit_gradient(logits.astype("float32"), previous, current)
    np.testing.assert_allclose(numpy(got), expected, rtol=1e-4, atol=1e-7)


def test_famo_three_steps_by_hand():
    # step 1 records (1, 2); step 2: delta = (log 1/0.8, log 2/1.9),
    # z = (1/2, 1/2) so g = (delta_0 - delta_1) / 4 * (1, -1) and Adam's
    # first step moves each logit by -learning_rate * sign(g)
    losses = [[1.0, 2.0], [0.8, 1.9], [0.5, 1.9]]
    strategy = built(FAMO())
    logits, used = famo_reference(losses)
    for step, step_losses in enumerate(losses):
        total = numpy(strategy.combine_losses(step_losses))
        np.testing.assert_allclose(total, np.dot(used[step], step_losses),
                                   rtol=1e-6)
        strategy.update_step(step_losses)
        np.testing.assert_allclose(numpy(strategy.logits), logits[step],
                                   rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(logits[1], [-0.025, 0.025], rtol=1e-5)
    np.testing.assert_allclose(used[0], [2 / 3, 1 / 3])
    assert float(numpy(strategy.updates)) == 2.0
    np.testing.assert_allclose(numpy(strategy.previous_losses), [0.5, 1.9])
    np.testing.assert_allclose(numpy(strategy.softmax_weights()),
                               softmax(logits[-1]), rtol=1e-5)
    # task_weights: the weights for the last losses seen
    np.testing.assert_allclose(
        numpy(strategy.task_weights()),
        numpy(famo_weights(strategy.logits, [0.5, 1.9])), rtol=1e-6)


@pytest.mark.parametrize("num_tasks,learning_rate,weight_decay", [
    (2, 0.025, 0.01), (3, 0.1, 0.0), (5, 0.01, 1e-3),
])
def test_famo_many_steps_match_numpy(num_tasks, learning_rate, weight_decay):
    rng = np.random.default_rng(num_tasks)
    losses = np.exp(np.cumsum(
        rng.normal(-0.05, 0.1, size=(40, num_tasks)), axis=0))
    losses = losses.astype("float32")
    strategy = built(FAMO(learning_rate=learning_rate,
                          weight_decay=weight_decay), num_tasks)
    logits, used = famo_reference(losses, learning_rate, weight_decay)
    for step, step_losses in enumerate(losses):
        np.testing.assert_allclose(
            numpy(strategy.combine_losses(step_losses)),
            np.dot(used[step], step_losses), rtol=1e-5)
        strategy.update_step(step_losses)
    np.testing.assert_allclose(numpy(strategy.logits), logits[-1],
                               rtol=1e-4, atol=1e-5)
    weights = numpy(strategy.task_weights())
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-5)
    assert np.all(weights > 0.0)


def test_famo_moves_weight_to_the_lagging_task():
    # task 0's loss falls 10 % a step, task 1's 1 %: z shifts to task 1
    strategy = built(FAMO(learning_rate=0.1))
    for step in range(30):
        strategy.update_step([0.9 ** step, 0.99 ** step])
    z = numpy(strategy.softmax_weights())
    assert z[1] > 0.75 and z[0] < 0.25


@pytest.mark.parametrize("bad", [NAN, INF, -INF, -1.0])
def test_famo_unusable_losses(bad):
    strategy = built(FAMO(), 3)
    strategy.update_step([1.0, 2.0, 3.0])
    strategy.update_step([0.9, 1.5, 2.9])
    before = [numpy(v).copy() for v in strategy.weights]
    # the total is NaN (the training loop's guard skips such a step) ...
    assert np.isnan(numpy(strategy.combine_losses([0.5, bad, 1.0])))
    assert np.all(np.isnan(numpy(famo_weights([0.0] * 3, [0.5, bad, 1.0]))))
    # ... and an update with it changes nothing
    strategy.update_step([0.5, bad, 1.0])
    for old, variable in zip(before, strategy.weights):
        np.testing.assert_array_equal(numpy(variable), old,
                                      err_msg=variable.path)
    # the next usable step compares with the last usable losses
    reference, _ = famo_reference([[1.0, 2.0, 3.0], [0.9, 1.5, 2.9],
                                   [0.8, 1.4, 2.5]])
    strategy.update_step([0.8, 1.4, 2.5])
    np.testing.assert_allclose(numpy(strategy.logits), reference[-1],
                               rtol=1e-5, atol=1e-8)


def test_famo_zero_loss_takes_all_the_weight_and_stays_finite():
    strategy = built(FAMO())
    strategy.update_step([1.0, 1.0])
    weights = numpy(famo_weights([0.0, 0.0], [0.0, 1.0]))
    np.testing.assert_allclose(weights, [1.0, 0.0], atol=1e-7)
    strategy.update_step([0.0, 1.0])
    assert np.all(np.isfinite(numpy(strategy.logits)))
    assert np.isfinite(numpy(strategy.combine_losses([0.0, 1.0])))


BAD_FLOATS = [
    ("learning_rate", 0.0, ValueError), ("learning_rate", -0.1, ValueError),
    ("learning_rate", NAN, ValueError), ("learning_rate", INF, ValueError),
    ("learning_rate", True, TypeError), ("learning_rate", "0.1", TypeError),
    ("learning_rate", None, TypeError),
    ("weight_decay", -1e-3, ValueError), ("weight_decay", NAN, ValueError),
    ("weight_decay", INF, ValueError), ("weight_decay", False, TypeError),
    ("epsilon", -1e-8, ValueError), ("epsilon", NAN, ValueError),
    ("epsilon", [1e-8], TypeError),
]


@pytest.mark.parametrize("name,value,error", BAD_FLOATS)
def test_famo_bad_hyperparameters(name, value, error):
    with pytest.raises(error, match=f"`{name}`.*Received: {name}="):
        FAMO(**{name: value})


def test_famo_edge_hyperparameters_are_accepted():
    strategy = FAMO(learning_rate=1e-12, weight_decay=0.0, epsilon=0.0)
    assert (strategy.learning_rate, strategy.weight_decay,
            strategy.epsilon) == (1e-12, 0.0, 0.0)
    assert FAMO(weight_decay=np.float32(0.5)).weight_decay == 0.5


@pytest.mark.parametrize("call,name,error", [
    (lambda: famo_weights([0.0, 0.0], [1.0]), "task_losses", ValueError),
    (lambda: famo_weights([[0.0]], [1.0]), "logits", ValueError),
    (lambda: famo_weights([], []), "logits", ValueError),
    (lambda: famo_weights(["a"], [1.0]), "logits", TypeError),
    (lambda: famo_weights([0.0], [1.0], epsilon=-1.0), "epsilon",
     ValueError),
    (lambda: famo_logit_gradient([0.0], [1.0, 2.0], [1.0]),
     "previous_losses", ValueError),
    (lambda: famo_logit_gradient([0.0], [1.0], [1.0], weight_decay=NAN),
     "weight_decay", ValueError),
    (lambda: famo_logit_gradient([0.0], [1.0], [1.0], weight_decay=True),
     "weight_decay", TypeError),
])
def test_famo_function_bad_arguments(call, name, error):
    with pytest.raises(error, match=f"`{name}`"):
        call()


def test_famo_before_set_tasks_and_wrong_losses():
    strategy = FAMO()
    for method in ("task_weights", "softmax_weights"):
        with pytest.raises(ValueError, match="set_tasks"):
            getattr(strategy, method)()
    for method in ("combine_losses", "update_step"):
        with pytest.raises(ValueError, match="set_tasks"):
            getattr(strategy, method)([1.0, 2.0])
    strategy = built(FAMO())
    with pytest.raises(ValueError, match="task_losses"):
        strategy.combine_losses([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="task_losses"):
        strategy.update_step([1.0])


def test_famo_state_in_weights_and_config():
    strategy = built(FAMO(learning_rate=0.05, weight_decay=0.001))
    for losses in ([1.0, 2.0], [0.7, 1.9], [0.6, 1.5]):
        strategy.update_step(losses)
    clone = FAMO.from_config(strategy.get_config())
    clone.set_tasks(strategy.task_names)
    clone.set_weights(strategy.get_weights())
    assert (clone.learning_rate, clone.weight_decay, clone.epsilon) == (
        0.05, 0.001, 1e-8)
    # the clone continues exactly as the original
    for losses in ([0.5, 1.4], [0.45, 1.0]):
        strategy.update_step(losses)
        clone.update_step(losses)
    for a, b in zip(strategy.weights, clone.weights):
        np.testing.assert_array_equal(numpy(a), numpy(b))


# -- training: the three modes of the protocol, save and resume ------------

FACTORIES = {
    "rlw": lambda: RandomLossWeighting(seed=3),
    "famo": lambda: FAMO(learning_rate=0.1),
}


def _protocol_run_fit(factory):
    from test_protocol import BATCH, EPOCHS, layers, losses, weights_of
    from test_training import make_data

    from mtlbook.training import MultiTaskModel

    x, y = make_data()
    strategy = factory()
    model = MultiTaskModel(*layers(), strategy=strategy)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=losses())
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False,
              verbose=0)
    return weights_of(model.network, strategy), strategy


def _assert_same(got, expected):
    assert sorted(got) == sorted(expected)
    for path, want in expected.items():
        np.testing.assert_allclose(got[path], want, rtol=1e-4, atol=1e-5,
                                   err_msg=path)


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", list(FACTORIES))
def test_fit_and_tape_loop_agree(name):
    from test_protocol import BATCH, EPOCHS, layers, tape_loop, weights_of
    from test_training import make_data

    expected, fitted = _protocol_run_fit(FACTORIES[name])
    x, y = make_data()
    network = keras.Model(*layers())
    strategy = FACTORIES[name]()
    tape_loop(network, strategy, x, y, EPOCHS, BATCH, 0.05)
    _assert_same(weights_of(network, strategy), expected)
    for a, b in zip(fitted.weights, strategy.weights):
        np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-4, atol=1e-6,
                                   err_msg=a.path)
    steps = EPOCHS * math.ceil(len(x) / BATCH)
    if name == "rlw":
        assert int(numpy(strategy.steps_seen)) == steps
    else:
        assert float(numpy(strategy.updates)) == steps - 1
        assert not np.allclose(numpy(strategy.logits), 0.0)


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", list(FACTORIES))
def test_compute_loss_override_agrees(name):
    from test_protocol import BATCH, EPOCHS, layers, losses, weights_of
    from test_training import make_data

    from mtlbook.weighting.base import UpdateEpoch

    class WeightedLossModel(keras.Model):
        """test_protocol's subclass, in the protocol's order: the total,
        then `update_step`."""

        def __init__(self, network, strategy, task_losses, **kwargs):
            super().__init__(**kwargs)
            strategy.set_tasks(list(network.output))
            self.network = network
            self.strategy = strategy
            self.task_losses = task_losses

        def call(self, inputs, training=False):
            return self.network(inputs, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None,
                         sample_weight=None, training=True):
            losses = ops.stack([self.task_losses[t](y[t], y_pred[t])
                                for t in self.strategy.task_names])
            total = self.strategy.combine_losses(losses)
            if training:
                self.strategy.update_step(losses)
            return total

    expected, _ = _protocol_run_fit(FACTORIES[name])
    x, y = make_data()
    strategy = FACTORIES[name]()
    model = WeightedLossModel(keras.Model(*layers()), strategy, losses())
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS,
                        shuffle=False, verbose=0,
                        callbacks=[UpdateEpoch(strategy)]).history
    assert len(history["a_weight"]) == EPOCHS
    _assert_same(weights_of(model, strategy), expected)


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", list(FACTORIES))
def test_save_and_load_keeps_the_state(tmp_path, name):
    from test_training import make_data, make_model

    x, y = make_data()
    model = make_model(FACTORIES[name](), optimizer="adam")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.strategy) is type(model.strategy)
    assert len(model.strategy.weights) > 0
    for a, b in zip(model.strategy.weights, restored.strategy.weights):
        np.testing.assert_array_equal(numpy(a), numpy(b))
    np.testing.assert_array_equal(numpy(restored.strategy.task_weights()),
                                  numpy(model.strategy.task_weights()))
    # both continue alike
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.strategy.weights, restored.strategy.weights):
        np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-5, atol=1e-7)


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", list(FACTORIES))
def test_backup_and_restore_resumes_exactly(tmp_path, name):
    from test_training import _Interrupt, make_data, make_model

    x, y = make_data()
    fit = dict(batch_size=16, epochs=4, verbose=0, shuffle=False)
    reference = make_model(FACTORIES[name](), optimizer="adam")
    reference.fit(x, y, **fit)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = make_model(FACTORIES[name](), optimizer="adam")
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(x, y, callbacks=[backup, _Interrupt()], **fit)
    resumed = make_model(FACTORIES[name](), optimizer="adam")
    resumed.fit(x, y, callbacks=[backup], **fit)
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-6,
                                   atol=1e-7, err_msg=a.path)
    if name == "rlw":
        assert int(numpy(resumed.strategy.steps_seen)) == 16
    else:
        assert float(numpy(resumed.strategy.updates)) == 15.0


def test_one_task_gets_the_weight_one():
    np.testing.assert_array_equal(numpy(random_loss_weights(1, 0, 3)), [1.0])
    strategy = built(FAMO(), 1)
    for loss in ([2.0], [1.0], [0.5]):
        np.testing.assert_allclose(numpy(strategy.combine_losses(loss)),
                                   loss[0])
        strategy.update_step(loss)
    np.testing.assert_array_equal(numpy(strategy.task_weights()), [1.0])
    assert np.isnan(numpy(strategy.combine_losses([-1.0])))
