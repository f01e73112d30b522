"""Which tasks to train together: lookahead inter-task affinity (TAG).

Task Affinity Grouping (Fifty et al., 2021) measures, during one training
run of all tasks together, how a step on task `i`'s gradient of the shared
parameters changes task `j`'s loss on the same batch:

    Z[i, j] = 1 - L_j(theta_s - lr * grad_{theta_s} L_i, theta_j)
                  / L_j(theta_s, theta_j)

Positive `Z[i, j]`: a step for task `i` also lowers task `j`'s loss (`i`
helps `j`); negative: it raises it. Averaged over training, the matrix
picks groups of tasks to train in one network each (`select_groups`).

- `lookahead_affinity`: the `(T, T)` matrix for one batch, from a function
  returning the `T` task losses and the shared variables (TensorFlow).
- `InterTaskAffinity`: a Keras callback recording it every `every` steps of
  `fit` (a `MultiTaskModel` or a plain model) and averaging.
- `select_groups`: exhaustive search over partitions of the tasks into at
  most `max_groups` groups, maximising the total affinity onto each task
  from the other members of its group.
"""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf


def _check_learning_rate(learning_rate):
    if (isinstance(learning_rate, bool)
            or not isinstance(learning_rate, numbers.Real)
            or not math.isfinite(learning_rate) or learning_rate <= 0):
        raise ValueError(
            "`learning_rate` must be a finite float > 0. "
            f"Received: learning_rate={learning_rate!r}"
        )
    return float(learning_rate)


def _check_variables(shared_variables):
    if (not isinstance(shared_variables, (list, tuple))
            or not shared_variables
            or not all(isinstance(v, tf.Variable) or hasattr(v, "assign")
                       for v in shared_variables)):
        raise TypeError(
            "`shared_variables` must be a non-empty list of variables. "
            f"Received: shared_variables={shared_variables!r}"
        )
    return list(shared_variables)


def lookahead_affinity(task_losses, shared_variables, learning_rate):
    """Lookahead inter-task affinity of one batch, a `(T, T)` matrix.

    With `L = task_losses()` the `T` task losses at the current weights and
    `g_i` the gradient of `L_i` with respect to the shared variables
    `theta_s`, it computes for every pair

        Z[i, j] = 1 - L_j(theta_s - learning_rate * g_i) / L_j(theta_s),

    one plain gradient step on the shared variables only (task-specific
    variables stay as they are), evaluated on the same batch (`task_losses`
    must not draw new data or use dropout, so that only the step changes
    the loss). The variables are restored afterwards: the model is left
    exactly as it was. The cost is one backward pass per task and `T`
    extra forward passes.

    Args:
        task_losses: callable with no arguments returning the `T` task
            losses (a `(T,)` tensor or a list of `T` scalars), computed from
            the current values of the variables.
        shared_variables: non-empty list of `tf.Variable` (or Keras
            variables), the shared parameters `theta_s`.
        learning_rate: float > 0. The lookahead step size `lr` (the
            optimizer's learning rate in the paper).

    Returns:
        `(T, T)` float64 NumPy array; row `i` is the step on task `i`,
        column `j` the task whose loss is measured. Task `j` must have a
        nonzero loss (a zero loss gives a non-finite column).

    Raises:
        ValueError: `learning_rate` is not a finite float > 0, or
            `task_losses` returns fewer than two losses.
        TypeError: `task_losses` is not callable, or `shared_variables`
            is not a non-empty list of variables.

    Example:

    ```python
    affinity = lookahead_affinity(
        lambda: model.compute_task_losses(y, model(x)),
        model.shared_variables, learning_rate=0.01)
    affinity[0, 1]  # how a step on task 0 lowers task 1's loss
    ```

    Reference:
        Fifty et al., 2021, "Efficiently Identifying Task Groupings for
        Multi-Task Learning".
    """
    if not callable(task_losses):
        raise TypeError(
            "`task_losses` must be a callable returning the T task losses. "
            f"Received: task_losses={task_losses!r}"
        )
    learning_rate = _check_learning_rate(learning_rate)
    variables = _check_variables(shared_variables)

    def losses_now():
        values = task_losses()
        if isinstance(values, (list, tuple)):
            values = tf.stack([tf.cast(v, "float32") for v in values])
        return tf.reshape(tf.cast(values, "float32"), [-1])

    with tf.GradientTape(persistent=True) as tape:
        before = losses_now()
        rows = [before[i] for i in range(before.shape[0])]
    num_tasks = len(rows)
    if num_tasks < 2:
        del tape
        raise ValueError(
            "`task_losses` must return at least two task losses. "
            f"Received: {num_tasks} loss(es)"
        )
    gradients = [tape.gradient(rows[i], variables) for i in range(num_tasks)]
    del tape
    saved = [tf.identity(v) for v in variables]
    before = before.numpy().astype("float64")
    affinity = np.zeros((num_tasks, num_tasks))
    try:
        for i, task_gradient in enumerate(gradients):
            for variable, value, gradient in zip(variables, saved,
                                                 task_gradient):
                step = 0.0 if gradient is None else learning_rate * gradient
                variable.assign(value - step)
            after = losses_now().numpy().astype("float64")
            with np.errstate(divide="ignore", invalid="ignore"):
                affinity[i] = 1.0 - after / before
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)
    return affinity


class InterTaskAffinity(keras.callbacks.Callback):
    """Records the lookahead inter-task affinity during `fit`, and averages.

    Every `every` training steps (from the first) it takes the next batch
    of `(x, y)` (in a shuffled order of its own, `batch_size` rows) and
    computes `lookahead_affinity` on it at the current weights. The
    average over training is `affinity`; each record is kept in `history`
    (with its step in `steps`). A Keras callback does not see the training
    batch, so the batches come from the `(x, y)` given here: pass the
    training data. The training itself is unchanged (the weights are
    restored after every lookahead).

    With a `mtlbook.training.MultiTaskModel`, the losses and the shared
    variables default to the model's (`compute_task_losses`,
    `shared_variables`). With a plain Keras model with dict outputs, pass
    `losses` (one loss per task) and `shared_variables`.

    Args:
        x: inputs (array or dict of arrays) to draw lookahead batches from.
        y: dict `{task: targets}`, the same number of rows as `x`.
        every: int >= 1. Record every `every` training steps.
        batch_size: int >= 1. Rows per lookahead batch.
        learning_rate: None or float > 0. Lookahead step size; None reads
            the optimizer's learning rate at each record.
        losses: None or dict `{task: loss}` (a Keras loss name, object or
            function, averaged over the batch); required for a model
            without `compute_task_losses`.
        shared_variables: None or list of variables; required for a model
            without `shared_variables`.
        seed: int. Seed of the batch order.

    Attributes:
        tasks: the task names, in the order of the matrix.
        history: list of `(T, T)` arrays, one per record.
        steps: list of ints, the training step of each record.
        affinity: `(T, T)` mean of `history` (property).

    Example:

    ```python
    recorder = InterTaskAffinity(x_train, y_train, every=10)
    model.fit(x_train, y_train, epochs=5, callbacks=[recorder])
    select_groups(recorder.affinity, max_groups=2, tasks=recorder.tasks)
    ```

    Reference:
        Fifty et al., 2021, "Efficiently Identifying Task Groupings for
        Multi-Task Learning".
    """

    def __init__(self, x, y, every=10, batch_size=64, learning_rate=None,
                 losses=None, shared_variables=None, seed=0):
        super().__init__()
        for name, value in (("every", every), ("batch_size", batch_size)):
            if (isinstance(value, bool)
                    or not isinstance(value, (int, np.integer))
                    or value < 1):
                raise ValueError(
                    f"`{name}` must be an int >= 1. "
                    f"Received: {name}={value!r}"
                )
        if learning_rate is not None:
            learning_rate = _check_learning_rate(learning_rate)
        if not isinstance(y, dict) or not y:
            raise TypeError(
                "`y` must be a non-empty dict {task: targets}. "
                f"Received: y of type {type(y).__name__}"
            )
        rows = {len(v) for v in tf.nest.flatten(x)}
        rows |= {len(v) for v in y.values()}
        if len(rows) != 1:
            raise ValueError(
                "`x` and every target in `y` must have the same number of "
                f"rows. Received: row counts {sorted(rows)}"
            )
        if losses is not None:
            if not isinstance(losses, dict) or set(losses) != set(y):
                raise ValueError(
                    "`losses` must be a dict with one loss per task of `y` "
                    f"{sorted(y)}. Received: losses={losses!r}"
                )
            losses = {t: keras.losses.get(v) for t, v in losses.items()}
        if shared_variables is not None:
            shared_variables = _check_variables(shared_variables)
        self.x, self.y = x, y
        self.every, self.batch_size = int(every), int(batch_size)
        self.learning_rate = learning_rate
        self.losses = losses
        self.shared_variables = shared_variables
        self.seed = seed
        self.num_rows = rows.pop()

    def on_train_begin(self, logs=None):
        model = self.model
        if self.losses is None and not hasattr(model, "compute_task_losses"):
            raise ValueError(
                "`losses` is required for a model without "
                "`compute_task_losses` (a plain keras.Model). Received: "
                f"losses=None for {type(model).__name__}"
            )
        variables = self.shared_variables
        if variables is None:
            variables = getattr(model, "shared_variables", None)
            if not variables:
                raise ValueError(
                    "`shared_variables` is required for a model without "
                    "`shared_variables`. Received: shared_variables=None "
                    f"for {type(model).__name__}"
                )
        self._variables = list(variables)
        self.tasks = list(getattr(model, "tasks", None) or self.y)
        if set(self.tasks) != set(self.y):
            raise ValueError(
                f"`y` must have the model's tasks {self.tasks}. "
                f"Received: y tasks {sorted(self.y)}"
            )
        self.history, self.steps = [], []
        self._step = 0
        self._rng = np.random.default_rng(self.seed)
        self._order, self._position = np.zeros(0, "int64"), 0

    def _next_batch(self):
        if self._position + self.batch_size > len(self._order):
            self._order = self._rng.permutation(self.num_rows)
            self._position = 0
        rows = self._order[self._position:self._position + self.batch_size]
        self._position += self.batch_size
        x = tf.nest.map_structure(lambda v: np.asarray(v)[rows], self.x)
        y = {t: np.asarray(v)[rows] for t, v in self.y.items()}
        return x, y

    def _task_losses(self, x, y):
        def losses():
            y_pred = self.model(x, training=False)
            if self.losses is None:
                return self.model.compute_task_losses(y, y_pred)
            return [keras.ops.mean(self.losses[t](y[t], y_pred[t]))
                    for t in self.tasks]

        return losses

    def on_train_batch_begin(self, batch, logs=None):
        if self._step % self.every == 0:
            learning_rate = self.learning_rate
            if learning_rate is None:
                learning_rate = float(keras.ops.convert_to_numpy(
                    self.model.optimizer.learning_rate))
            x, y = self._next_batch()
            self.history.append(lookahead_affinity(
                self._task_losses(x, y), self._variables, learning_rate))
            self.steps.append(self._step)
        self._step += 1

    @property
    def affinity(self):
        """`(T, T)` mean of the recorded matrices."""
        if not getattr(self, "history", None):
            raise ValueError(
                "No affinity recorded yet: pass the callback to `fit` "
                "first. Received: 0 records"
            )
        return np.mean(self.history, axis=0)


def _partitions(items):
    """Every set partition of `items` (lists of lists), recursively."""
    if len(items) == 1:
        yield [items]
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        for index in range(len(partition)):
            yield (partition[:index] + [[first] + partition[index]]
                   + partition[index + 1:])
        yield [[first]] + partition


def group_score(affinity, groups):
    """Total affinity onto each task from the rest of its group.

    For a group `G` and a task `j` in it, the affinity onto `j` is the mean
    of `affinity[i, j]` over the other members `i` of `G` (0 for a task
    alone); the score sums it over all tasks.

    Args:
        affinity: `(T, T)` array (`lookahead_affinity`, averaged).
        groups: sequence of sequences of task indices.

    Returns:
        float, the score.

    Example:

    ```python
    group_score(affinity, [(0, 1), (2,)])  # affinity[1, 0] + affinity[0, 1]
    ```

    Reference:
        Fifty et al., 2021, "Efficiently Identifying Task Groupings for
        Multi-Task Learning" (network selection).
    """
    affinity = np.asarray(affinity, "float64")
    if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1]:
        raise ValueError(
            "`affinity` must be a square (T, T) matrix. "
            f"Received: affinity with shape {affinity.shape}"
        )
    flat = [i for group in groups for i in group]
    if (any(isinstance(i, bool) or not isinstance(i, (int, np.integer))
            or not 0 <= i < affinity.shape[0] for i in flat)
            or len(set(flat)) != len(flat)):
        raise ValueError(
            "`groups` must hold distinct task indices in "
            f"[0, {affinity.shape[0]}). Received: groups={groups!r}"
        )
    score = 0.0
    for group in groups:
        group = list(group)
        for j in group:
            others = [i for i in group if i != j]
            if others:
                score += float(np.mean(affinity[others, j]))
    return score


def select_groups(affinity, max_groups, tasks=None):
    """Best partition of the tasks into at most `max_groups` groups.

    Exhaustive search over every partition of the `T` tasks into at most
    `max_groups` groups (`T <= 10`), maximising `group_score`: the sum over
    tasks `j` of the mean affinity `Z[i, j]` onto `j` from the other tasks
    `i` of its group (0 for a task alone). The paper's network selection
    lets groups overlap (a task served by its best group); partitions keep
    one network per task. Ties go to the partition found first, which
    lists fewer groups first.

    Args:
        affinity: `(T, T)` finite array, `T >= 2`; row `i` the step on task
            `i`, column `j` the task measured.
        max_groups: int in [1, T]. The most groups (networks) allowed.
        tasks: None or a sequence of `T` task names; groups are returned as
            names when given, as indices otherwise.

    Returns:
        `(groups, score)`: a tuple of tuples (each sorted in task order,
        groups ordered by their first task) and its float score.

    Raises:
        ValueError: `affinity` is not a finite square matrix with
            2 <= T <= 10, `max_groups` is not an int in [1, T], or `tasks`
            does not have `T` distinct names.

    Example:

    ```python
    groups, score = select_groups(recorder.affinity, max_groups=2,
                                  tasks=recorder.tasks)
    ```

    Reference:
        Fifty et al., 2021, "Efficiently Identifying Task Groupings for
        Multi-Task Learning".
    """
    try:
        matrix = np.asarray(affinity, "float64")
    except (TypeError, ValueError):
        matrix = None
    if (matrix is None or matrix.ndim != 2
            or matrix.shape[0] != matrix.shape[1]
            or not 2 <= matrix.shape[0] <= 10
            or not np.all(np.isfinite(matrix))):
        shown = (f"affinity with shape {matrix.shape}"
                 if matrix is not None and matrix.ndim > 0
                 else f"affinity={affinity!r}")
        if (matrix is not None and matrix.ndim > 0
                and not np.all(np.isfinite(matrix))):
            shown += " and non-finite entries"
        raise ValueError(
            "`affinity` must be a finite square (T, T) matrix with "
            f"2 <= T <= 10. Received: {shown}"
        )
    num_tasks = matrix.shape[0]
    if (isinstance(max_groups, bool)
            or not isinstance(max_groups, (int, np.integer))
            or not 1 <= max_groups <= num_tasks):
        raise ValueError(
            f"`max_groups` must be an int in [1, {num_tasks}]. "
            f"Received: max_groups={max_groups!r}"
        )
    if tasks is not None:
        names = list(tasks)
        if len(names) != num_tasks or len(set(names)) != num_tasks:
            raise ValueError(
                f"`tasks` must be {num_tasks} distinct names. "
                f"Received: tasks={tasks!r}"
            )
        tasks = names
    best, best_score = None, -math.inf
    candidates = sorted(
        (p for p in _partitions(list(range(num_tasks)))
         if len(p) <= max_groups),
        key=len,
    )
    for partition in candidates:
        score = group_score(matrix, partition)
        if score > best_score + 1e-12:
            best, best_score = partition, score
    groups = sorted(tuple(sorted(group)) for group in best)
    if tasks is not None:
        groups = [tuple(tasks[i] for i in group) for group in groups]
    return tuple(groups), best_score


__all__ = [
    "InterTaskAffinity",
    "group_score",
    "lookahead_affinity",
    "select_groups",
]
