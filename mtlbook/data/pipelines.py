"""Turning arrays and a dict of task labels into a `tf.data` pipeline.

A shuffled pipeline draws the order of each pass over the data from
`(seed, pass)` alone, with a stateless permutation
(`tf.random.experimental.index_shuffle`). A training run that
`keras.callbacks.BackupAndRestore` resumes in a fresh process therefore sees
the batches an uninterrupted run would have seen, as long as the pipeline's
`epoch_callback` tells it which epoch Keras resumed at.
"""

import math

import keras
import numpy as np

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# the first seed word `tf.random.experimental.index_shuffle` adds
_INDEX_SHUFFLE_PAD = np.int64(498247692)


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"`{name}` must be a bool (True or False). "
            f"Received: {name}={value!r}"
        )
    return bool(value)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_count(name, value, minimum=1):
    if not _is_int(value):
        raise TypeError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}"
        )


def _as_examples(name, value, examples=None):
    """`value` as an array with one row per example, or a clear error."""
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise TypeError(
            f"`{name}` must be an array of shape `(n, ...)`. "
            f"Received: {name} that NumPy cannot stack ({error})"
        ) from None
    if array.dtype == object or array.ndim == 0:
        raise TypeError(
            f"`{name}` must be an array of shape `(n, ...)` with a numeric, "
            f"bool or string dtype. Received: {name}={value!r:.80}"
        )
    if examples is not None and len(array) != examples:
        raise ValueError(
            "Every label array in `y` must have one entry per row of `x`. "
            f"Received: len(x)={examples}, len({name})={len(array)}"
        )
    return array


class ShuffleEpoch(keras.callbacks.Callback):
    """Tells a shuffled `to_dataset` pipeline which epoch Keras is in.

    `to_dataset` makes one and attaches it as `dataset.epoch_callback`; pass
    it to `fit`. At the start of every epoch it sets where the pipeline's
    next pass starts, so that a run that `keras.callbacks.BackupAndRestore`
    resumes at epoch `e` (in a fresh process, with a fresh pipeline) reads
    the batches of epoch `e`, not those of epoch 0. Without it the pipeline
    moves to the next permutation at each new pass by itself: right for a
    run that is not resumed.

    Args:
        examples: int. Number of examples `n` in the data set.
        batch_size: int. The pipeline's batch size.
        repeat: bool. Whether the pipeline repeats forever (then the epoch
            length comes from `steps_per_epoch`).

    Example:

    ```python
    train = to_dataset(x, y, batch_size=64, shuffle=True, seed=0)
    model.fit(train, epochs=5, callbacks=[
        train.epoch_callback, keras.callbacks.BackupAndRestore("backup")])
    ```
    """

    def __init__(self, examples, batch_size, repeat=False):
        super().__init__()
        _check_count("examples", examples)
        _check_count("batch_size", batch_size)
        self.examples = int(examples)
        self.batch_size = int(batch_size)
        self.repeat = _check_flag("repeat", repeat)
        self.start = 0

    def next_start(self):
        """Returns where a new pass starts and moves on to the next pass.

        The pipeline calls it once per iterator, at its first element.

        Returns:
            int. The position `pass * n + offset` in the endless stream of
            passes (pass `p` is the permutation drawn with `(seed, p)`).
        """
        start = self.start
        if not self.repeat:
            self.start = (start // self.examples + 1) * self.examples
        return start

    def start_of_epoch(self, epoch, steps=None, steps_per_execution=1):
        """Returns the stream position of the first example of `epoch`.

        It follows what `fit` draws: `steps` batches per epoch, rounded up
        to whole executions of `steps_per_execution` batches; a finite
        pipeline's epoch also ends where its pass ends, and the next epoch
        starts a new pass.

        Args:
            epoch: int. The epoch (0-based) Keras is starting.
            steps: optional int. Batches per epoch (`steps_per_epoch`);
                `None` means one full pass per epoch.
            steps_per_execution: int. The model's `steps_per_execution`.

        Returns:
            int. The position where the pipeline's next pass starts.
        """
        _check_count("epoch", epoch, minimum=0)
        if steps is not None:
            _check_count("steps", steps)
        _check_count("steps_per_execution", steps_per_execution)
        if steps is None:
            if self.repeat and epoch > 0:
                raise ValueError(
                    "A repeated pipeline needs `steps_per_epoch` in `fit` "
                    "to know where epoch "
                    f"{epoch} starts. Received: steps_per_epoch=None"
                )
            return epoch * self.examples
        per_epoch = math.ceil(steps / steps_per_execution) * steps_per_execution
        if self.repeat:
            return epoch * per_epoch * self.batch_size
        batches_per_pass = math.ceil(self.examples / self.batch_size)
        epochs_per_pass = math.ceil(batches_per_pass / per_epoch)
        passes, epoch_in_pass = divmod(epoch, epochs_per_pass)
        return (passes * self.examples
                + epoch_in_pass * per_epoch * self.batch_size)

    def on_epoch_begin(self, epoch, logs=None):
        steps = self.params.get("steps") if self.params else None
        execution = getattr(self.model, "steps_per_execution", 1) or 1
        self.start = self.start_of_epoch(epoch, steps, execution)


def _shuffled(tensors, examples, batch_size, seed, repeat, epoch_callback):
    """Batches of `tensors` in the order drawn from `(seed, pass)`."""
    import tensorflow as tf

    captured = tf.nest.map_structure(tf.convert_to_tensor, tensors)

    def first_position(_):
        start = tf.py_function(epoch_callback.next_start, [], tf.int64)
        return tf.ensure_shape(start, [])

    def positions(start):
        if repeat:
            return tf.data.Dataset.range(start, _INT64_MAX)
        return tf.data.Dataset.range(start, (start // examples + 1) * examples)

    def gather(position):
        passes = position // examples
        # Row i is the seed that `index_shuffle(i, [seed, pass], n - 1)`
        # pads to; the raw op takes one per position (the wrapper does not).
        seeds = tf.stack([tf.fill(tf.shape(passes), _INDEX_SHUFFLE_PAD),
                          tf.fill(tf.shape(passes), np.int64(seed)), passes],
                         axis=1)
        order = tf.raw_ops.RandomIndexShuffle(
            index=position % examples, seed=seeds,
            max_index=np.int64(examples - 1), rounds=4,
        )
        return tf.nest.map_structure(lambda t: tf.gather(t, order), captured)

    dataset = tf.data.Dataset.from_tensors(np.int64(0)).map(first_position)
    dataset = dataset.flat_map(positions).batch(batch_size).map(gather)
    cardinality = (
        tf.data.INFINITE_CARDINALITY if repeat
        else math.ceil(examples / batch_size)
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(cardinality))


def to_dataset(
    x, y=None, batch_size=32, shuffle=False, seed=0, cache=True, repeat=False
):
    """Builds a batched, prefetched `tf.data.Dataset` of `(x, y)` pairs.

    With `shuffle=True` the order of pass `p` over the data is a fixed
    permutation drawn from `(seed, p)` (a stateless
    `tf.random.experimental.index_shuffle`): every pass has a new order,
    and the same seed gives the same orders in any process, whatever the
    global random seed. To resume a run exactly with
    `keras.callbacks.BackupAndRestore`, pass the returned dataset's
    `epoch_callback` to `fit` as well (see the example): it tells the
    pipeline the epoch that Keras resumes at. Without it an uninterrupted
    run is unchanged, but a resumed one restarts at the order of epoch 0.
    Keras resumes at the start of an epoch (also with a `save_freq` in
    batches), so only epoch boundaries are exact.

    Args:
        x: array of inputs, shape `(n, ...)`, `n >= 1`.
        y: dict `{task: labels}` (each of length `n`), a single label
            array, or `None` for inputs only.
        batch_size: int. Batch size.
        shuffle: bool. Reshuffle every epoch (the whole data set).
        seed: int. Shuffle seed, so that runs are repeatable.
        cache: bool. Cache the elements in memory after the first epoch
            (a shuffled pipeline holds the arrays in memory anyway).
        repeat: bool. Repeat forever (then pass `steps_per_epoch` to `fit`).

    Returns:
        A `tf.data.Dataset` yielding `(x_batch, y_batch)` with `y_batch` a
        dict like `y`, or `x_batch` alone when `y` is None. Its attribute
        `epoch_callback` is the `ShuffleEpoch` callback to pass to `fit`
        (harmless without `shuffle`: that order has no epoch).

    Example:

    ```python
    data = load_digits()
    train = to_dataset(*data["train"], batch_size=64, shuffle=True, seed=0)
    model.fit(train, epochs=5, callbacks=[
        train.epoch_callback, keras.callbacks.BackupAndRestore("backup")])
    ```
    """
    import tensorflow as tf

    _check_count("batch_size", batch_size)
    if not _is_int(seed):
        raise TypeError(f"`seed` must be an int. Received: seed={seed!r}")
    if not _INT64_MIN <= seed <= _INT64_MAX:
        raise ValueError(
            f"`seed` must fit in int64. Received: seed={seed!r}"
        )
    shuffle = _check_flag("shuffle", shuffle)
    cache = _check_flag("cache", cache)
    repeat = _check_flag("repeat", repeat)
    x = _as_examples("x", x)
    if len(x) == 0:
        raise ValueError(
            "`x` must hold at least one example. "
            f"Received: x with shape {x.shape}"
        )
    if isinstance(y, dict):
        if not y:
            raise ValueError(
                "`y` must be a non-empty dict `{task: labels}`, a label "
                "array or None. Received: y={}"
            )
        for task in y:
            if not isinstance(task, str):
                raise TypeError(
                    "The task names (keys of `y`) must be str. "
                    f"Received: {task!r}"
                )
        y = {task: _as_examples(f"y[{task!r}]", labels, len(x))
             for task, labels in y.items()}
    elif y is not None:
        y = _as_examples("y", y, len(x))
    tensors = x if y is None else (x, y)
    epoch_callback = ShuffleEpoch(len(x), batch_size, repeat)
    if shuffle:
        dataset = _shuffled(
            tensors, len(x), batch_size, seed, repeat, epoch_callback
        )
    else:
        dataset = tf.data.Dataset.from_tensor_slices(tensors)
        if cache:
            dataset = dataset.cache()
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.batch(batch_size)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    dataset.epoch_callback = epoch_callback
    return dataset
