"""The TF1 reference graphs of Part I and the TF1 -> Keras weight copy.

The graphs use only `tf.compat.v1` core ops (`placeholder`, `get_variable`,
`tf.nn.conv2d`, `train.*Optimizer`, `Session`), which still run in
TensorFlow 2. The higher-level `tf.compat.v1.layers` do not: under Keras 3
they raise, which is why the graph builds its layers from variables.

Variables are created as `<layer>/kernel` and `<layer>/bias`; the Keras
counterpart `keras_multitask_cnn` names its layers the same, so
`copy_tf1_weights` can move the weights across by name.
"""

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

# task name -> (number of classes, hidden units of the task's dense layer)
DEFAULT_TASKS = {"digit": (10, 128), "parity": (2, 256)}


class MultitaskGraph(NamedTuple):
    """Handles into the graph built by `multitask_cnn_graph`.

    `labels`, `logits` and `losses` are dicts keyed by task name.
    """

    graph: tf.Graph
    pixels: tf.Tensor
    labels: dict
    logits: dict
    losses: dict
    total_loss: tf.Tensor
    train_op: tf.Operation
    init_op: tf.Operation


def _task_dict(tasks):
    tasks = DEFAULT_TASKS if tasks is None else tasks
    if not isinstance(tasks, dict) or not tasks:
        raise TypeError(
            "`tasks` must be a non-empty dict {name: (classes, hidden_units)}. "
            f"Received: tasks={tasks!r}"
        )
    for name, spec in tasks.items():
        if len(spec) != 2 or min(spec) < 1:
            raise ValueError(
                "`tasks` values must be (classes, hidden_units) positive ints. "
                f"Received: tasks[{name!r}]={spec!r}"
            )
    return dict(tasks)


def _dense(x, units, name, seed):
    with v1.variable_scope(name):
        kernel = v1.get_variable(
            "kernel", [x.shape[-1], units],
            initializer=v1.glorot_uniform_initializer(seed=seed),
        )
        bias = v1.get_variable(
            "bias", [units], initializer=v1.zeros_initializer()
        )
    return tf.matmul(x, kernel) + bias


def _conv_pool(x, filters, name, seed):
    with v1.variable_scope(name):
        kernel = v1.get_variable(
            "kernel", [5, 5, x.shape[-1], filters],
            initializer=v1.glorot_uniform_initializer(seed=seed),
        )
        bias = v1.get_variable(
            "bias", [filters], initializer=v1.zeros_initializer()
        )
    x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias))
    return tf.nn.max_pool2d(x, 2, 2, "VALID")


def multitask_cnn_graph(
    image_size=28, tasks=None, optimizer="adam", learning_rate=1e-3, seed=0
):
    """Builds the classic TF1 two-task CNN in a new `tf.Graph`.

    `pixels [None, image_size**2]` -> reshape to images -> conv 32@5x5 ->
    max-pool 2 -> conv 64@5x5 -> max-pool 2 -> flatten; then, per task,
    dense `hidden` (ReLU) -> dense `classes` logits. The loss is the sum of
    the tasks' mean sparse softmax cross-entropies. The convolutions pad
    "SAME", as TensorFlow's MNIST tutorials do (`tf.layers.conv2d` defaults
    to "VALID"), so 28x28 images give 7x7x64 features and any
    `image_size >= 4` works.

    Args:
        image_size: int. Side of the square grey input images.
        tasks: dict `{name: (classes, hidden_units)}`; default
            `{"digit": (10, 128), "parity": (2, 256)}`.
        optimizer: `"adam"` (`AdamOptimizer`) or `"sgd"`
            (`GradientDescentOptimizer`).
        learning_rate: float.
        seed: int. Graph-level seed; each variable gets its own op seed.

    Returns:
        A `MultitaskGraph`.

    Example:

    ```python
    net = multitask_cnn_graph()
    with tf.compat.v1.Session(graph=net.graph) as session:
        session.run(net.init_op)
        feed = {net.pixels: x, net.labels["digit"]: y1,
                net.labels["parity"]: y2}
        session.run(net.train_op, feed)
    ```
    """
    tasks = _task_dict(tasks)
    optimizers = {
        "adam": v1.train.AdamOptimizer,
        "sgd": v1.train.GradientDescentOptimizer,
    }
    if optimizer not in optimizers:
        raise ValueError(
            f"`optimizer` must be one of {sorted(optimizers)}. "
            f"Received: optimizer={optimizer!r}"
        )
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        pixels = v1.placeholder(
            tf.float32, [None, image_size * image_size], "pixels"
        )
        x = tf.reshape(pixels, [-1, image_size, image_size, 1])
        x = _conv_pool(x, 32, "conv1", seed + 1)
        x = _conv_pool(x, 64, "conv2", seed + 2)
        x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
        labels, logits, losses = {}, {}, {}
        for index, (name, (classes, hidden)) in enumerate(tasks.items()):
            labels[name] = v1.placeholder(tf.int64, [None], f"{name}_labels")
            h = tf.nn.relu(
                _dense(x, hidden, f"{name}_hidden", seed + 10 + index)
            )
            logits[name] = _dense(h, classes, name, seed + 20 + index)
            losses[name] = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=labels[name], logits=logits[name]
                )
            )
        total_loss = tf.add_n(list(losses.values()))
        train_op = optimizers[optimizer](learning_rate).minimize(total_loss)
        init_op = v1.global_variables_initializer()
    return MultitaskGraph(
        graph, pixels, labels, logits, losses, total_loss, train_op, init_op
    )


def keras_multitask_cnn(image_size=28, tasks=None):
    """The Keras 3 functional twin of `multitask_cnn_graph`.

    Same layers, same layer names (`conv1`, `conv2`, `<task>_hidden`,
    `<task>`), one named output of logits per task. The flattened trunk
    output is the layer `features`.

    Args:
        image_size: int. Side of the square grey input images.
        tasks: dict `{name: (classes, hidden_units)}` as in
            `multitask_cnn_graph`.

    Returns:
        An uncompiled `keras.Model` from `(batch, image_size**2)` pixels to
        `{task: logits}`.

    Example:

    ```python
    model = keras_multitask_cnn()
    logits = model(np.zeros((2, 784), "float32"))  # {"digit": .., "parity": ..}
    ```
    """
    tasks = _task_dict(tasks)
    layers = keras.layers
    pixels = keras.Input((image_size * image_size,), name="pixels")
    x = layers.Reshape((image_size, image_size, 1))(pixels)
    for name, filters in (("conv1", 32), ("conv2", 64)):
        x = layers.Conv2D(
            filters, 5, padding="same", activation="relu", name=name
        )(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten(name="features")(x)
    outputs = {}
    for name, (classes, hidden) in tasks.items():
        h = layers.Dense(hidden, activation="relu", name=f"{name}_hidden")(x)
        outputs[name] = layers.Dense(classes, name=name)(h)
    return keras.Model(pixels, outputs, name="multitask_cnn")


def copy_tf1_weights(session, model):
    """Copies every `<layer>/kernel` and `<layer>/bias` of a TF1 graph into
    the Keras layer of the same name.

    The TF1 graph keeps its variables in the `GLOBAL_VARIABLES` collection;
    Keras keeps them as layer attributes. Optimizer slots (Adam's moments)
    are not model weights and are not copied.

    Args:
        session: a `tf.compat.v1.Session` whose graph has been initialised.
        model: a built Keras model with layers named like the graph's
            variable scopes.

    Returns:
        List of the layer names that were copied.

    Example:

    ```python
    net = multitask_cnn_graph()
    model = keras_multitask_cnn()
    session = tf.compat.v1.Session(graph=net.graph)
    session.run(net.init_op)
    copy_tf1_weights(session, model)  # ["conv1", "conv2", "digit", ...]
    ```

    Build `model` outside `with tf.compat.v1.Session(...)`: that block makes
    the session's graph the default one, so Keras would create its
    variables inside the TF1 graph.
    """
    if not tf.executing_eagerly():
        raise RuntimeError(
            "copy_tf1_weights must run eagerly: call it outside "
            "`with session.graph.as_default()` / `with Session(...)` blocks."
        )
    if not isinstance(session, v1.Session):
        raise TypeError(
            "`session` must be a tf.compat.v1.Session. "
            f"Received: session={type(session).__name__}"
        )
    with session.graph.as_default():
        variables = v1.trainable_variables()
    values = dict(zip(
        [v.op.name for v in variables], session.run(variables)
    ))
    scopes = sorted({name.rsplit("/", 1)[0] for name in values})
    layer_names = {layer.name for layer in model.layers}
    for scope in scopes:
        if scope not in layer_names:
            raise ValueError(
                "`model` must have a layer for every TF1 variable scope. "
                f"Received: a model without a layer named {scope!r}"
            )
        layer = model.get_layer(scope)
        new = [values[f"{scope}/kernel"], values[f"{scope}/bias"]]
        old = [w.shape for w in layer.get_weights()]
        if [tuple(w.shape) for w in new] != [tuple(s) for s in old]:
            raise ValueError(
                f"Shapes differ for layer {scope!r}: TF1 "
                f"{[w.shape for w in new]} vs Keras {old}"
            )
        layer.set_weights(new)
    return scopes


class RegressionGraph(NamedTuple):
    """Handles into the graph built by `two_regression_graph`."""

    graph: tf.Graph
    features: tf.Tensor
    targets: dict
    outputs: dict
    losses: dict
    train_op: tf.Operation
    init_op: tf.Operation


def two_regression_graph(num_features=10, hidden_units=10, learning_rate=0.01,
                         seed=0):
    """A shared ReLU layer with two linear regression heads, summed MSE.

    Args:
        num_features: int. Width of the input vectors.
        hidden_units: int. Width of the shared layer.
        learning_rate: float. Adam's learning rate.
        seed: int. Graph-level seed.

    Returns:
        A `RegressionGraph` with tasks `"first"` and `"second"`.

    Example:

    ```python
    net = two_regression_graph(num_features=4)
    with tf.compat.v1.Session(graph=net.graph) as session:
        session.run(net.init_op)  # once, before training; never again after
        feed = {net.features: x, net.targets["first"]: y1,
                net.targets["second"]: y2}
        session.run(net.train_op, feed)
    ```
    """
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        features = v1.placeholder(tf.float32, [None, num_features], "features")
        shared = tf.nn.relu(_dense(features, hidden_units, "shared", seed + 1))
        targets, outputs, losses = {}, {}, {}
        for index, name in enumerate(("first", "second")):
            targets[name] = v1.placeholder(
                tf.float32, [None, 1], f"{name}_targets"
            )
            outputs[name] = _dense(shared, 1, name, seed + 2 + index)
            losses[name] = tf.reduce_mean(
                tf.square(outputs[name] - targets[name])
            )
        train_op = v1.train.AdamOptimizer(learning_rate).minimize(
            tf.add_n(list(losses.values()))
        )
        init_op = v1.global_variables_initializer()
    return RegressionGraph(graph, features, targets, outputs, losses, train_op,
                           init_op)
