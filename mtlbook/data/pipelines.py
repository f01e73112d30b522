"""Turning arrays and a dict of task labels into a `tf.data` pipeline."""

import numpy as np


def to_dataset(
    x, y=None, batch_size=32, shuffle=False, seed=0, cache=True, repeat=False
):
    """Builds a batched, prefetched `tf.data.Dataset` of `(x, y)` pairs.

    Args:
        x: array of inputs, shape `(n, ...)`.
        y: dict `{task: labels}` (each of length `n`), a single label
            array, or `None` for inputs only.
        batch_size: int. Batch size.
        shuffle: bool. Reshuffle every epoch (buffer = whole data set).
        seed: int. Shuffle seed, so that runs are repeatable.
        cache: bool. Cache the elements in memory after the first epoch.
        repeat: bool. Repeat forever (then pass `steps_per_epoch` to `fit`).

    Returns:
        A `tf.data.Dataset` yielding `(x_batch, y_batch)` with `y_batch` a
        dict like `y`, or `x_batch` alone when `y` is None.

    Example:

    ```python
    data = load_digits()
    train = to_dataset(*data["train"], batch_size=64, shuffle=True)
    model.fit(train, epochs=5)
    ```
    """
    import tensorflow as tf

    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(
            "`batch_size` must be a positive int. "
            f"Received: batch_size={batch_size!r}"
        )
    x = np.asarray(x)
    if y is not None:
        labels = y.values() if isinstance(y, dict) else [y]
        for labels_array in labels:
            if len(labels_array) != len(x):
                raise ValueError(
                    "Every label array in `y` must have one entry per row of "
                    f"`x`. Received: len(x)={len(x)}, "
                    f"len(labels)={len(labels_array)}"
                )
        if isinstance(y, dict):
            y = {task: np.asarray(labels) for task, labels in y.items()}
    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(
            len(x), seed=seed, reshuffle_each_iteration=True
        )
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
