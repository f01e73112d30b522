"""Tests of mtlbook.tf1: the TF1 reference graphs and the weight copy."""

import numpy as np
import pytest
import tensorflow as tf

from mtlbook import tf1

v1 = tf.compat.v1


def batch(n=16, size=28, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size * size)).astype("float32")
    digits = rng.integers(0, 10, n)
    return x, {"digit": digits, "parity": digits % 2}


def feed(net, x, y):
    return {net.pixels: x, **{net.labels[t]: y[t] for t in net.labels}}


def test_graph_has_named_variables_and_trains():
    net = tf1.multitask_cnn_graph(
        image_size=12, optimizer="sgd", learning_rate=0.1
    )
    with net.graph.as_default():
        names = sorted(v.op.name for v in v1.trainable_variables())
    assert names == sorted(
        f"{layer}/{kind}"
        for layer in ("conv1", "conv2", "digit_hidden", "digit",
                      "parity_hidden", "parity")
        for kind in ("kernel", "bias")
    )
    x, y = batch(size=12)
    with v1.Session(graph=net.graph) as session:
        session.run(net.init_op)
        before = session.run(net.total_loss, feed(net, x, y))
        for _ in range(20):
            session.run(net.train_op, feed(net, x, y))
        after = session.run(net.total_loss, feed(net, x, y))
    assert after < before


def test_copy_gives_identical_logits_in_keras():
    net = tf1.multitask_cnn_graph(image_size=12)
    model = tf1.keras_multitask_cnn(image_size=12)
    session = v1.Session(graph=net.graph)
    session.run(net.init_op)
    copied = tf1.copy_tf1_weights(session, model)
    x, y = batch(size=12)
    logits = session.run(net.logits, feed(net, x, y))
    session.close()
    assert len(copied) == 6
    outputs = model(x)
    for task in ("digit", "parity"):
        np.testing.assert_allclose(outputs[task], logits[task], atol=1e-5)


def test_graph_is_deterministic_given_seed():
    values = []
    for _ in range(2):
        net = tf1.multitask_cnn_graph(image_size=12, seed=5)
        with v1.Session(graph=net.graph) as session:
            session.run(net.init_op)
            with net.graph.as_default():
                values.append(session.run(v1.trainable_variables()[0]))
    np.testing.assert_array_equal(values[0], values[1])


def test_custom_tasks():
    tasks = {"a": (3, 8)}
    net = tf1.multitask_cnn_graph(image_size=8, tasks=tasks)
    model = tf1.keras_multitask_cnn(image_size=8, tasks=tasks)
    assert list(net.logits) == ["a"] and list(model.output) == ["a"]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="optimizer"):
        tf1.multitask_cnn_graph(optimizer="rmsprop")
    with pytest.raises(TypeError, match="tasks"):
        tf1.keras_multitask_cnn(tasks=[("a", 3, 8)])
    with pytest.raises(ValueError, match="tasks"):
        tf1.multitask_cnn_graph(tasks={"a": (0, 8)})
    with pytest.raises(TypeError, match="session"):
        tf1.copy_tf1_weights(
            "not a session", tf1.keras_multitask_cnn(image_size=8)
        )


def test_copy_rejects_a_model_without_matching_layers():
    net = tf1.multitask_cnn_graph(image_size=8)
    model = tf1.keras_multitask_cnn(image_size=8, tasks={"other": (2, 4)})
    session = v1.Session(graph=net.graph)
    session.run(net.init_op)
    with pytest.raises(ValueError, match="layer named"):
        tf1.copy_tf1_weights(session, model)
    session.close()


def test_two_regression_graph_learns():
    net = tf1.two_regression_graph(num_features=4, hidden_units=16)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    targets = {"first": x[:, :1], "second": x[:, 1:2] - x[:, 2:3]}
    fd = {net.features: x, **{net.targets[t]: targets[t] for t in targets}}
    with v1.Session(graph=net.graph) as session:
        session.run(net.init_op)
        before = session.run(net.losses, fd)
        for _ in range(200):
            session.run(net.train_op, fd)
        after = session.run(net.losses, fd)
    assert all(after[t] < 0.2 * before[t] for t in targets)


def test_regression_graph_reinitialises_to_the_same_weights():
    # The chapter's "new Session" bug relies on this: with fixed seeds, the
    # initialiser draws the same untrained weights in every new session.
    net = tf1.two_regression_graph(num_features=4, hidden_units=8)
    values = []
    for _ in range(2):
        with v1.Session(graph=net.graph) as session:
            session.run(net.init_op)
            with net.graph.as_default():
                values.append(session.run(v1.trainable_variables()))
    for first, second in zip(*values):
        np.testing.assert_array_equal(first, second)
