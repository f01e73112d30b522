"""Builders of small multi-task `keras.Model`s, one named output per task.

Every builder takes the input shape and a dict `tasks` mapping each task's
name to the width of its linear output layer (the number of classes for a
classification task, whose outputs are then logits, or 1 for a regression
task). The output layers are named after the tasks, so `model.compile` and
`model.fit` take dicts keyed by task name.

- `conv_trunk`: a small convolutional feature extractor for images.
- `shared_bottom`: one shared Dense bottom, one tower per task (hard
  parameter sharing).
- `single_task`: the same network for one task (the baseline).
- `cross_stitch_model`: one Dense branch per task, mixed by `CrossStitch`
  units after each layer.
- `mmoe_model`: experts mixed by one gate per task (`num_gates=1`: OMoE).
- `ple_model`: task-specific and shared experts in `num_levels` levels.
- `gate_weights`: the gate weights of a mixture-of-experts model.
- `reset_optimizer`: zero an optimizer's state (moments, step counter).
- `seeded_weights`: the initial weights of freshly built, seeded models.
- `SideBySide`: train several independent models as one Keras model, so
  that many short runs share one traced training step.

Pass `conv_filters` to put a `conv_trunk` in front of any of them (a
separate one per model, so baselines never share weights by accident).
"""

import math

import keras
import numpy as np

from mtlbook.layers.cross_stitch import CrossStitch
from mtlbook.layers.dense_stack import DenseStack, check_units
from mtlbook.layers.mmoe import MMoE
from mtlbook.layers.ple import CGC, PLE


def _check_tasks(tasks):
    if not isinstance(tasks, dict) or not tasks or not all(
        isinstance(name, str) and isinstance(units, int)
        and not isinstance(units, bool) and units > 0
        for name, units in tasks.items()
    ):
        raise ValueError(
            "`tasks` must be a non-empty dict {name: output units > 0}. "
            f"Received: tasks={tasks!r}"
        )
    return dict(tasks)


def _check_int(name, value, minimum):
    """Raises unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(
        value, (int, np.integer)
    ) or value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _check_name(name):
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"`name` must be a non-empty str. Received: name={name!r}"
        )


def _check_tower_units(tower_units):
    """`()` (no tower) or a tuple of positive ints named `tower_units`."""
    if tower_units is None or (
        isinstance(tower_units, (list, tuple)) and not tower_units
    ):
        return ()
    return check_units("tower_units", tower_units)


def _check_input_shape(input_shape):
    if not isinstance(input_shape, (list, tuple)) or not input_shape or any(
        size is not None and (
            isinstance(size, bool) or not isinstance(size, (int, np.integer))
            or size < 1)
        for size in input_shape
    ):
        raise ValueError(
            "`input_shape` must be a non-empty tuple of positive ints (or "
            f"None). Received: input_shape={input_shape!r}"
        )


def conv_trunk(filters=(16, 32), name="trunk"):
    """A conv feature extractor: `[Conv2D 3x3 + ReLU, MaxPool 2x2]` per entry.

    It ends with `Flatten`, not global average pooling, so the features
    keep where things are in the image (position tasks need that).

    Args:
        filters: sequence of ints > 0. Channels of each conv block.
        name: str. Name of the returned `keras.Sequential`.

    Returns:
        A `keras.Sequential` mapping `(batch, H, W, C)` to
        `(batch, (H // 2**n) * (W // 2**n) * filters[-1])`, `n = len(filters)`.
    """
    filters = check_units("filters", filters)
    _check_name(name)
    layers = []
    for index, channels in enumerate(filters):
        layers.append(keras.layers.Conv2D(channels, 3, padding="same",
                                          activation="relu",
                                          name=f"conv_{index}"))
        layers.append(keras.layers.MaxPooling2D(name=f"pool_{index}"))
    layers.append(keras.layers.Flatten(name="flatten"))
    return keras.Sequential(layers, name=name)


def _features(input_shape, conv_filters):
    _check_input_shape(input_shape)
    if conv_filters is not None:
        conv_filters = check_units("conv_filters", conv_filters)
        if len(input_shape) != 3:
            raise ValueError(
                "`input_shape` must be (height, width, channels) with "
                f"`conv_filters`. Received: input_shape={input_shape!r}"
            )
    inputs = keras.Input(tuple(input_shape), name="inputs")
    if conv_filters is None:
        return inputs, inputs
    return inputs, conv_trunk(conv_filters)(inputs)


def _heads(features, tasks, tower_units):
    """One tower (optional Dense stack) and linear output per task."""
    if not isinstance(features, (list, tuple)):
        features = [features] * len(tasks)
    outputs = {}
    for (name, units), h in zip(tasks.items(), features):
        if tower_units:
            h = DenseStack(tower_units, name=f"{name}_tower")(h)
        outputs[name] = keras.layers.Dense(units, name=name)(h)
    return outputs


def shared_bottom(input_shape, tasks, bottom_units=(64,), tower_units=(8,),
                  conv_filters=None, name="shared_bottom"):
    """Hard parameter sharing: a shared Dense bottom and one tower per task.

    `out_t = head_t(tower_t(bottom(x)))`.

    Args:
        input_shape: tuple. Shape of one example.
        tasks: dict `{name: output units}`.
        bottom_units: sequence of ints. Widths of the shared bottom.
        tower_units: sequence of ints, or `()` for no tower.
        conv_filters: sequence of ints or None. A `conv_trunk` first.
        name: str. Model name.

    Returns:
        A `keras.Model` with one output per task, named after the task.
    """
    tasks = _check_tasks(tasks)
    bottom_units = check_units("bottom_units", bottom_units)
    tower_units = _check_tower_units(tower_units)
    _check_name(name)
    inputs, h = _features(input_shape, conv_filters)
    h = DenseStack(bottom_units, name="bottom")(h)
    return keras.Model(inputs, _heads(h, tasks, tower_units), name=name)


def single_task(input_shape, task, units, hidden_units=(64,),
                tower_units=(8,), conv_filters=None, name=None):
    """The `shared_bottom` network for one task alone (the baseline).

    Args:
        input_shape: tuple. Shape of one example.
        task: str. The task's name (and the output's).
        units: int. Output units.
        hidden_units, tower_units, conv_filters: as `shared_bottom`.
        name: str or None. Model name (default `single_<task>`).

    Returns:
        A `keras.Model` with one output named `task`.
    """
    if not isinstance(task, str) or not task:
        raise TypeError(
            f"`task` must be a non-empty str. Received: task={task!r}"
        )
    _check_int("units", units, 1)
    hidden_units = check_units("hidden_units", hidden_units)
    return shared_bottom(input_shape, {task: units}, hidden_units,
                         tower_units, conv_filters,
                         name=f"single_{task}" if name is None else name)


def cross_stitch_model(input_shape, tasks, units=(32, 16), tower_units=(),
                       self_weight=0.9, conv_filters=None,
                       name="cross_stitch"):
    """One Dense branch per task, with a `CrossStitch` unit after each layer.

    Args:
        input_shape: tuple. Shape of one example.
        tasks: dict `{name: output units}` with at least two tasks.
        units: sequence of ints. Widths of each branch's Dense layers.
        tower_units: sequence of ints, or `()` for no tower.
        self_weight: float in [0, 1]. Initial diagonal of each unit.
        conv_filters: sequence of ints or None. One `conv_trunk` shared by
            all branches first.
        name: str. Model name.

    Returns:
        A `keras.Model` with one output per task; its cross-stitch layers
        are named `cross_stitch_0`, `cross_stitch_1`, ...
    """
    tasks = _check_tasks(tasks)
    if len(tasks) < 2:
        raise ValueError(
            f"`tasks` must have at least 2 tasks. Received: tasks={tasks!r}"
        )
    units = check_units("units", units)
    tower_units = _check_tower_units(tower_units)
    if isinstance(self_weight, bool) or not isinstance(
        self_weight, (int, float)
    ) or not math.isfinite(self_weight) or not 0.0 <= self_weight <= 1.0:
        raise ValueError(
            "`self_weight` must be a float in [0, 1]. "
            f"Received: self_weight={self_weight!r}"
        )
    _check_name(name)
    inputs, h = _features(input_shape, conv_filters)
    branches = [h] * len(tasks)
    for depth, width in enumerate(units):
        branches = [
            keras.layers.Dense(width, activation="relu",
                               name=f"{task}_dense_{depth}")(b)
            for task, b in zip(tasks, branches)
        ]
        branches = CrossStitch(self_weight, name=f"cross_stitch_{depth}")(
            branches)
    return keras.Model(inputs, _heads(branches, tasks, tower_units),
                       name=name)


def mmoe_model(input_shape, tasks, num_experts=4, expert_units=(16,),
               tower_units=(8,), num_gates=None, conv_filters=None,
               name="mmoe"):
    """Multi-gate mixture of experts: `out_t = head_t(tower_t(MMoE(x)[t]))`.

    Args:
        input_shape: tuple. Shape of one example.
        tasks: dict `{name: output units}`.
        num_experts: int. Number of experts.
        expert_units: sequence of ints. Widths of each expert.
        tower_units: sequence of ints, or `()` for no tower.
        num_gates: None (one gate per task, MMoE) or 1 (OMoE).
        conv_filters: sequence of ints or None. A `conv_trunk` first.
        name: str. Model name; the `MMoE` layer is named `experts`.

    Returns:
        A `keras.Model` with one output per task.
    """
    tasks = _check_tasks(tasks)
    _check_int("num_experts", num_experts, 1)
    if num_gates is not None and (
        isinstance(num_gates, bool) or num_gates not in (1, len(tasks))
    ):
        raise ValueError(
            f"`num_gates` must be None, 1 or the number of tasks "
            f"({len(tasks)}). Received: num_gates={num_gates!r}"
        )
    tower_units = _check_tower_units(tower_units)
    _check_name(name)
    inputs, h = _features(input_shape, conv_filters)
    mixed = MMoE(len(tasks), num_experts, expert_units, num_gates=num_gates,
                 name="experts")(h)
    return keras.Model(inputs, _heads(mixed, tasks, tower_units), name=name)


def ple_model(input_shape, tasks, num_levels=2, num_task_experts=1,
              num_shared_experts=1, expert_units=(16,), tower_units=(8,),
              conv_filters=None, name="ple"):
    """Progressive layered extraction: `out_t = head_t(tower_t(PLE(x)[t]))`.

    Args:
        input_shape: tuple. Shape of one example.
        tasks: dict `{name: output units}`.
        num_levels: int. CGC levels (1 gives a CGC model).
        num_task_experts, num_shared_experts: ints. Experts per level.
        expert_units: sequence of ints. Widths of each expert.
        tower_units: sequence of ints, or `()` for no tower.
        conv_filters: sequence of ints or None. A `conv_trunk` first.
        name: str. Model name; the `PLE` layer is named `experts`.

    Returns:
        A `keras.Model` with one output per task.
    """
    tasks = _check_tasks(tasks)
    tower_units = _check_tower_units(tower_units)
    _check_name(name)
    inputs, h = _features(input_shape, conv_filters)
    mixed = PLE(len(tasks), num_levels, num_task_experts, num_shared_experts,
                expert_units, name="experts")(h)
    return keras.Model(inputs, _heads(mixed, tasks, tower_units), name=name)


def gate_weights(model, x, layer_name="experts", batch_size=1024):
    """The gate weights of `model`'s expert layer on inputs `x`, as NumPy.

    Works for models from `mmoe_model` and `ple_model` (and any functional
    model whose `MMoE`, `CGC` or `PLE` layer is called once): it runs the
    part of `model` below the layer, then the layer with
    `return_gates=True`.

    Args:
        model: a functional `keras.Model`.
        x: array of inputs for `model`.
        layer_name: str. Name of the `MMoE`, `CGC` or `PLE` layer.
        batch_size: int. Batch size of the forward passes.

    Returns:
        List of float32 arrays `(len(x), experts)`, one per task (for `PLE`,
        the last level's), each row summing to 1.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not isinstance(layer_name, str) or layer_name not in [
        layer.name for layer in model.layers
    ]:
        raise ValueError(
            "`layer_name` must name a layer of `model`. Received: "
            f"layer_name={layer_name!r}; layers: "
            f"{[layer.name for layer in model.layers]}"
        )
    layer = model.get_layer(layer_name)
    if not isinstance(layer, (MMoE, CGC, PLE)):
        raise TypeError(
            "`layer_name` must name an MMoE, CGC or PLE layer. "
            f"Received: layer_name={layer_name!r} ({type(layer).__name__})"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
            or batch_size < 1:
        raise ValueError(
            "`batch_size` must be a positive int. "
            f"Received: batch_size={batch_size!r}"
        )
    if not hasattr(x, "shape") or not hasattr(x, "__len__"):
        raise TypeError(
            "`x` must be an array of inputs. "
            f"Received: x of type {type(x).__name__}"
        )
    if len(x) == 0:
        raise ValueError("`x` must hold at least one input. Received: 0")
    if hasattr(model.input, "shape"):  # one input: check its shape
        expected = tuple(model.input.shape[1:])
        if len(x.shape) != len(expected) + 1 or any(
            want is not None and got != want
            for got, want in zip(x.shape[1:], expected)
        ):
            raise ValueError(
                f"`x` must have shape (n, {', '.join(map(str, expected))}), "
                f"the model's input. Received: x.shape={tuple(x.shape)}"
            )
    below = keras.Model(model.input, layer.input)
    # Eager calls, not `predict`: a new sub-model per call would trace a new
    # predict function each time (and TensorFlow warns about retracing).
    batches = []
    for start in range(0, len(x), batch_size):
        features = below(x[start:start + batch_size], training=False)
        _, gates = layer(features, return_gates=True)
        batches.append([keras.ops.convert_to_numpy(g) for g in gates])
    return [np.concatenate(task) for task in zip(*batches)]


def reset_optimizer(optimizer):
    """Zeros an optimizer's state: its moments and its step counter.

    Every variable of `optimizer` except the learning rate is set to zero,
    which is the state of a newly built optimizer (for Adam, SGD with
    momentum, RMSprop: zero moments, step 0). A compiled model can then be
    trained again from new weights without tracing its training step again.

    Args:
        optimizer: a built `keras.optimizers.Optimizer`.

    Returns:
        None.

    Example:

    ```python
    model.set_weights(fresh_model.get_weights())
    reset_optimizer(model.optimizer)  # as if compiled anew
    ```
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "`optimizer` must be a keras.optimizers.Optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    for variable in optimizer.variables:
        if "learning_rate" not in variable.path:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))


def seeded_weights(builders, seed):
    """The initial weights of a fresh model from each builder, seeded.

    Calls `keras.utils.set_random_seed(seed)`, then each builder in order.
    Draw the weights of every run *before* the first `fit` of a
    `SideBySide` model: `set_random_seed` also calls `tf.random.set_seed`,
    which clears TensorFlow's kernel cache, so the next training step after
    it instantiates and optimises its graph again.

    Args:
        builders: dict `{name: callable}`; each callable returns a new
            `keras.Model`.
        seed: int. The seed.

    Returns:
        dict `{name: list of NumPy arrays}` (`model.get_weights()`).

    Example:

    ```python
    initial = {seed: seeded_weights(builders, seed) for seed in (0, 1, 2)}
    ```
    """
    if not isinstance(builders, dict) or not builders or not all(
            callable(build) for build in builders.values()):
        raise ValueError(
            "`builders` must be a non-empty dict {name: callable}. "
            f"Received: builders={builders!r}"
        )
    _check_int("seed", seed, 0)
    keras.utils.set_random_seed(seed)
    return {name: build().get_weights() for name, build in builders.items()}


class SideBySide:
    """Trains several independent models as one Keras model.

    The members are called on one shared input, and the combined model has
    one output `"<member>/<task>"` per member and task. Their weights are
    disjoint, so the gradient of the summed loss with respect to one
    member's weights is that member's own gradient, and an optimizer with
    per-weight updates (Adam, SGD; not with `global_clipnorm`, which couples
    all weights) updates each member exactly as a separate run would. The
    training step is traced once for all members and all runs: `restart`
    puts in new weights and a fresh optimizer state, and `fit` takes all
    epochs as one stream of shuffled passes, in one Keras epoch, which
    avoids the fixed cost of each Keras epoch (a new input iterator,
    callbacks) when epochs are only a few steps long.

    Args:
        members: dict `{name: keras.Model}`; models with one input of the
            same shape and a dict of outputs `{task: tensor}`.
        optimizer: a `keras.optimizers.Optimizer` (or its name).
        loss: a loss (or its name), used for every output.
        **compile_kwargs: more arguments of `keras.Model.compile`.

    Attributes:
        members: the dict of member models (they hold the weights).
        model: the combined, compiled `keras.Model`.

    Example:

    ```python
    side = SideBySide({"a": build_a(), "b": build_b()},
                      keras.optimizers.Adam(0.01), "mse")
    side.restart(seeded_weights({"a": build_a, "b": build_b}, seed=0))
    side.fit(x, {"task": y}, epochs=30, batch_size=500, seed=0)
    ```
    """

    def __init__(self, members, optimizer="adam", loss="mse",
                 **compile_kwargs):
        if not isinstance(members, dict) or not members or not all(
                isinstance(name, str) and isinstance(model, keras.Model)
                for name, model in members.items()):
            raise ValueError(
                "`members` must be a non-empty dict {name: keras.Model}. "
                f"Received: members={members!r}"
            )
        shapes = {tuple(model.input.shape[1:]) for model in members.values()}
        if len(shapes) != 1:
            raise ValueError(
                "`members` must all take inputs of one shape. "
                f"Received input shapes: {sorted(shapes)}"
            )
        names = [model.name for model in members.values()]
        if len(set(names)) != len(names):
            raise ValueError(
                "`members` must be models with distinct names (`name=` of "
                "the builders; they become layers of one model). Received "
                f"model names {names}"
            )
        self.members = dict(members)
        inputs = keras.Input(shapes.pop())
        outputs = {}
        for name, model in self.members.items():
            for task, output in model(inputs).items():
                outputs[f"{name}/{task}"] = output
        self.model = keras.Model(inputs, outputs, name="side_by_side")
        self.model.compile(optimizer, loss=loss, **compile_kwargs)

    def targets(self, y):
        """Maps `{task: labels}` to `{"<member>/<task>": labels}`.

        Args:
            y: dict `{task: labels}` with every member's tasks.

        Returns:
            dict `{"<member>/<task>": labels}`.
        """
        tasks = sorted({key.split("/", 1)[1] for key in self._keys()})
        if not isinstance(y, dict) or not set(tasks) <= set(y):
            raise ValueError(
                f"`y` must be a dict with the labels of tasks {tasks}. "
                "Received: "
                f"{sorted(y) if isinstance(y, dict) else type(y).__name__}"
            )
        return {key: y[key.split("/", 1)[1]] for key in self._keys()}

    def _keys(self):
        return [f"{name}/{task}" for name, model in self.members.items()
                for task in model.output_names]

    def _check_labels(self, name, x, y):
        """Raises unless `y` has every task's labels, one per row of `x`."""
        tasks = sorted({key.split("/", 1)[1] for key in self._keys()})
        if not isinstance(y, dict) or not set(tasks) <= set(y):
            raise ValueError(
                f"`{name}` must be a dict with the labels of tasks {tasks}. "
                f"Received: {sorted(y) if isinstance(y, dict) else y!r}"
            )
        lengths = {task: len(y[task]) for task in tasks}
        if any(length != len(x) for length in lengths.values()):
            raise ValueError(
                f"`{name}` must have one label per input ({len(x)}). "
                f"Received lengths {lengths}"
            )

    def restart(self, weights):
        """Sets every member's weights and zeros the optimizer's state.

        Args:
            weights: dict `{name: list of arrays}`, e.g. from
                `seeded_weights`.

        Returns:
            None.
        """
        if not isinstance(weights, dict) or set(weights) != set(self.members):
            raise ValueError(
                "`weights` must be a dict with one entry per member "
                f"{sorted(self.members)}. Received keys: "
                f"{sorted(weights) if isinstance(weights, dict) else weights!r}"
            )
        for name, model in self.members.items():
            model.set_weights(weights[name])
        if self.model.optimizer.built:
            reset_optimizer(self.model.optimizer)

    def fit(self, x, y, epochs, batch_size, seed, validation_data=None):
        """`epochs` shuffled passes over `(x, y)`, as one Keras epoch.

        Args:
            x: array of inputs.
            y: dict `{task: labels}`; every member learns these labels.
            epochs: int > 0. Number of passes.
            batch_size: int. Batch size.
            seed: int. Seed of the shuffles (a NumPy generator).
            validation_data: `(x, {task: labels})` or None.

        Returns:
            The `keras.callbacks.History` of the one Keras epoch.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) \
                or epochs < 1:
            raise ValueError(
                f"`epochs` must be a positive int. Received: epochs={epochs!r}"
            )
        _check_int("batch_size", batch_size, 1)
        _check_int("seed", seed, 0)
        self._check_labels("y", x, y)
        if validation_data is not None:
            if not isinstance(validation_data, (list, tuple)) or len(
                validation_data
            ) != 2:
                raise ValueError(
                    "`validation_data` must be a pair (x, {task: labels}). "
                    f"Received: {type(validation_data).__name__}"
                )
            self._check_labels("validation_data[1]", *validation_data)
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)])
        stream = {key: labels[order] for key, labels in self.targets(y).items()}
        if validation_data is not None:
            validation_data = (validation_data[0],
                               self.targets(validation_data[1]))
        return self.model.fit(x[order], stream, batch_size=batch_size,
                              shuffle=False, verbose=0,
                              validation_data=validation_data)
