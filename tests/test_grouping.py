"""Tests of mtlbook.grouping: lookahead affinity (TAG) and group selection."""

import itertools

import keras
import numpy as np
import pytest

from mtlbook.grouping import (
    InterTaskAffinity, group_score, lookahead_affinity, select_groups,
)

tensorflow_only = pytest.mark.tensorflow


def make_linear(seed=0, n=32, d=4):
    """Shared weights w (d,), heads a (T,), targets of three tasks."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    w = rng.normal(size=(d, 1)).astype("float32")
    heads = np.array([1.0, -0.5, 2.0], "float32")
    y = {
        "a": (x @ rng.normal(size=(d, 1))).astype("float32"),
        "b": (x @ rng.normal(size=(d, 1))).astype("float32"),
        "c": (x[:, :1] * 3.0).astype("float32"),
    }
    return x, y, w, heads


def numpy_affinity(x, y, w, heads, learning_rate):
    """Z[i, j] = 1 - L_j(w - lr grad_w L_i) / L_j(w), all by hand."""
    x, w = x.astype("float64"), w.astype("float64")
    targets = [y[t].astype("float64") for t in ("a", "b", "c")]

    def loss(j, weights):
        return np.mean((heads[j] * (x @ weights) - targets[j]) ** 2)

    def gradient(i):  # d/dw mean((a_i x w - y_i)^2)
        residual = heads[i] * (x @ w) - targets[i]
        return 2.0 / len(x) * heads[i] * x.T @ residual

    z = np.zeros((3, 3))
    for i in range(3):
        stepped = w - learning_rate * gradient(i)
        for j in range(3):
            z[i, j] = 1.0 - loss(j, stepped) / loss(j, w)
    return z


def linear_model(w, heads, multitask=True):
    inputs = keras.Input((w.shape[0],))
    trunk = keras.layers.Dense(1, use_bias=False, name="trunk")
    shared = trunk(inputs)
    outputs = {}
    for task, head in zip(("a", "b", "c"), heads):
        layer = keras.layers.Dense(1, use_bias=False, name=task)
        outputs[task] = layer(shared)
        layer.set_weights([np.array([[head]], "float32")])
    trunk.set_weights([w])
    if multitask:
        from mtlbook.training import MultiTaskModel

        model = MultiTaskModel(inputs, outputs)
    else:
        model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss={t: "mse" for t in ("a", "b", "c")})
    return model


@tensorflow_only
def test_lookahead_affinity_matches_hand_computation():
    x, y, w, heads = make_linear()
    model = linear_model(w, heads)
    before = [v.numpy() for v in model.trainable_variables]
    z = lookahead_affinity(
        lambda: model.compute_task_losses(y, model(x)),
        model.shared_variables, learning_rate=0.05)
    np.testing.assert_allclose(z, numpy_affinity(x, y, w, heads, 0.05),
                               rtol=1e-4, atol=1e-5)
    # the diagonal is a plain step on the task itself: it lowers its loss
    assert np.all(np.diag(z) > 0)
    for old, new in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(old, new.numpy())  # restored


@tensorflow_only
def test_only_shared_variables_move():
    # heads are not stepped: with the heads in the list the values change
    x, y, w, heads = make_linear(seed=1)
    model = linear_model(w, heads)

    def losses():
        return model.compute_task_losses(y, model(x))

    shared = lookahead_affinity(losses, model.shared_variables, 0.05)
    everything = lookahead_affinity(losses, model.trainable_variables, 0.05)
    np.testing.assert_allclose(shared, numpy_affinity(x, y, w, heads, 0.05),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(shared, everything)


@tensorflow_only
def test_list_of_losses_and_plain_variables():
    import tensorflow as tf

    w = tf.Variable([[2.0]])
    x = np.array([[1.0], [2.0]], "float32")

    def losses():  # L_0 = mean((x w - 1)^2), L_1 = mean((x w + 1)^2)
        prediction = tf.matmul(x, w)
        return [tf.reduce_mean((prediction - 1.0) ** 2),
                tf.reduce_mean((prediction + 1.0) ** 2)]

    z = lookahead_affinity(losses, [w], learning_rate=0.1)

    def loss(j, value):
        return np.mean((x[:, 0] * value + (-1.0 if j == 0 else 1.0)) ** 2)

    def gradient(j):
        residual = x[:, 0] * 2.0 + (-1.0 if j == 0 else 1.0)
        return np.mean(2.0 * residual * x[:, 0])

    expected = [[1 - loss(j, 2.0 - 0.1 * gradient(i)) / loss(j, 2.0)
                 for j in range(2)] for i in range(2)]
    np.testing.assert_allclose(z, expected, rtol=1e-5)
    assert w.numpy()[0, 0] == 2.0


@tensorflow_only
def test_callback_records_and_does_not_change_training():
    x, y, w, heads = make_linear(seed=2, n=64)
    reference = linear_model(w, heads)
    reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    model = linear_model(w, heads)
    recorder = InterTaskAffinity(x, y, every=3, batch_size=16)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
              callbacks=[recorder])
    for a, b in zip(reference.trainable_variables,
                    model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    assert recorder.steps == [0, 3, 6]  # 8 steps
    assert recorder.tasks == ["a", "b", "c"]
    assert recorder.affinity.shape == (3, 3)
    np.testing.assert_allclose(recorder.affinity,
                               np.mean(recorder.history, axis=0))
    # the first record is at the initial weights: check it by hand
    rows = np.random.default_rng(0).permutation(64)[:16]
    first = numpy_affinity(x[rows], {t: v[rows] for t, v in y.items()}, w,
                           heads, 0.05)
    np.testing.assert_allclose(recorder.history[0], first,
                               rtol=1e-4, atol=1e-5)


@tensorflow_only
def test_callback_on_plain_model():
    x, y, w, heads = make_linear(seed=3, n=32)
    model = linear_model(w, heads, multitask=False)
    recorder = InterTaskAffinity(
        x, y, every=1, batch_size=32, learning_rate=0.01,
        losses={t: "mse" for t in y},
        shared_variables=model.get_layer("trunk").trainable_variables)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0,
              callbacks=[recorder])
    np.testing.assert_allclose(recorder.history[0],
                               numpy_affinity(x, y, w, heads, 0.01),
                               rtol=1e-4, atol=1e-5)


@tensorflow_only
def test_callback_bad_inputs():
    x, y, w, heads = make_linear(n=8)
    for kwargs, name in (({"every": 0}, "every"), ({"every": True}, "every"),
                         ({"batch_size": 2.5}, "batch_size"),
                         ({"learning_rate": 0.0}, "learning_rate"),
                         ({"losses": {"a": "mse"}}, "losses")):
        with pytest.raises(ValueError, match=name):
            InterTaskAffinity(x, y, **kwargs)
    with pytest.raises(TypeError, match="`y`"):
        InterTaskAffinity(x, [y["a"]])
    with pytest.raises(ValueError, match="rows"):
        InterTaskAffinity(x[:4], y)
    with pytest.raises(TypeError, match="shared_variables"):
        InterTaskAffinity(x, y, shared_variables=[])
    plain = linear_model(w, heads, multitask=False)
    with pytest.raises(ValueError, match="losses"):
        plain.fit(x, y, verbose=0, callbacks=[InterTaskAffinity(x, y)])
    with pytest.raises(ValueError, match="shared_variables"):
        plain.fit(x, y, verbose=0, callbacks=[InterTaskAffinity(
            x, y, losses={t: "mse" for t in y})])
    with pytest.raises(ValueError, match="fit"):
        InterTaskAffinity(x, y).affinity


@tensorflow_only
def test_lookahead_bad_inputs():
    import tensorflow as tf

    w = tf.Variable([1.0])

    def losses():
        return tf.stack([w[0] ** 2, (w[0] - 1) ** 2])

    for rate in (0.0, -1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="learning_rate"):
            lookahead_affinity(losses, [w], rate)
    with pytest.raises(TypeError, match="task_losses"):
        lookahead_affinity(3.0, [w], 0.1)
    for variables in ([], w, [1.0]):
        with pytest.raises(TypeError, match="shared_variables"):
            lookahead_affinity(losses, variables, 0.1)
    with pytest.raises(ValueError, match="two"):
        lookahead_affinity(lambda: tf.stack([w[0] ** 2]), [w], 0.1)


def brute_force(affinity, max_groups):
    """Best score over every labelling of tasks with group numbers."""
    num_tasks = len(affinity)
    best = -np.inf
    for labels in itertools.product(range(max_groups), repeat=num_tasks):
        score = 0.0
        for j in range(num_tasks):
            mates = [i for i in range(num_tasks)
                     if labels[i] == labels[j] and i != j]
            score += np.mean(affinity[mates, j]) if mates else 0.0
        best = max(best, score)
    return best


def test_select_groups_finds_the_planted_pairs():
    z = np.full((4, 4), -0.1)
    z[0, 1] = z[1, 0] = 0.3
    z[2, 3] = z[3, 2] = 0.2
    groups, score = select_groups(z, max_groups=2,
                                  tasks=["a", "b", "c", "d"])
    assert groups == (("a", "b"), ("c", "d"))
    assert score == pytest.approx(1.0)  # 0.3 + 0.3 + 0.2 + 0.2
    groups, score = select_groups(z, max_groups=1)
    assert groups == ((0, 1, 2, 3),)
    # each task: mean of (one 0.3 or 0.2, two -0.1)
    assert score == pytest.approx(2 * (0.1 / 3) + 2 * (0.0 / 3))


def test_select_groups_keeps_negative_tasks_alone():
    z = -np.ones((3, 3))
    groups, score = select_groups(z, max_groups=3)
    assert groups == ((0,), (1,), (2,)) and score == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_select_groups_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(5, 5))
    for max_groups in (1, 2, 3, 5):
        groups, score = select_groups(z, max_groups)
        assert len(groups) <= max_groups
        assert sorted(i for g in groups for i in g) == list(range(5))
        assert score == pytest.approx(brute_force(z, max_groups))
        assert group_score(z, groups) == pytest.approx(score)


def test_group_score_by_hand():
    z = np.arange(9.0).reshape(3, 3)
    # task 0: mean(z[1,0], z[2,0]) = 4.5; 1: mean(1, 7) = 4; 2: mean(2, 5)
    assert group_score(z, [(0, 1, 2)]) == pytest.approx(4.5 + 4 + 3.5)
    assert group_score(z, [(0, 2), (1,)]) == pytest.approx(6 + 2)


def test_select_groups_bad_inputs():
    z = np.zeros((3, 3))
    for value in (np.zeros((3, 2)), np.zeros((1, 1)), np.zeros(3),
                  np.zeros((11, 11)), np.full((2, 2), np.nan), "z"):
        with pytest.raises(ValueError, match="affinity"):
            select_groups(value, 1)
    for value in (0, 4, 1.0, True, None):
        with pytest.raises(ValueError, match="max_groups"):
            select_groups(z, value)
    for value in (["a", "b"], ["a", "a", "b"]):
        with pytest.raises(ValueError, match="tasks"):
            select_groups(z, 2, tasks=value)
    with pytest.raises(ValueError, match="groups"):
        group_score(z, [(0, 1), (1, 2)])
    with pytest.raises(ValueError, match="groups"):
        group_score(z, [(0, 3)])
    with pytest.raises(ValueError, match="affinity"):
        group_score(np.zeros((2, 3)), [(0, 1)])
