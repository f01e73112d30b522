"""scikit-learn's bundled handwritten digits with several task labels.

The 1,797 8x8 grey images ship with scikit-learn, so every chapter runs
offline on real handwriting. Images can be upscaled (bilinear) to the 28x28
of MNIST so that MNIST-sized models and code run unchanged.
"""

import math
from typing import NamedTuple

import numpy as np


def _check_int(name, value, minimum):
    """Raises unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(
        value, (int, np.integer)
    ) or value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _as_array(name, value, dtype=None):
    """`value` as a NumPy array, or a `TypeError` naming `name`."""
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be an array of numbers. "
            f"Received: {name}={_shown(value)}"
        ) from None


def _shown(value):
    """`value` for an error message: an array by its shape, else its repr."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_real(value):
    """Whether `value` is a finite real number and not a bool."""
    return (not isinstance(value, (bool, np.bool_))
            and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(value))


class Split(NamedTuple):
    """One split of a multi-task data set.

    Attributes:
        x: float32 array of inputs, shape `(n, ...)`.
        y: dict mapping each task name to its label array (length `n`).
    """

    x: np.ndarray
    y: dict


def _parity(digits):
    return (digits % 2).astype("int32")


def _large(digits):
    return (digits >= 5).astype("int32")


def _digit(digits):
    return digits.astype("int32")


# task name -> function from digit class to label (all classification tasks)
DIGIT_TASKS = {
    "digit": _digit,  # 10 classes
    "parity": _parity,  # 0 = even, 1 = odd
    "large": _large,  # 0 = digits 0-4, 1 = digits 5-9
}


def _interpolation_matrix(size_in, size_out):
    """`(size_out, size_in)` matrix of bilinear weights (align corners)."""
    positions = np.linspace(0.0, size_in - 1.0, size_out)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = positions - low
    matrix = np.zeros((size_out, size_in))
    matrix[np.arange(size_out), low] += 1.0 - frac
    matrix[np.arange(size_out), high] += frac
    return matrix


def resize_images(images, size):
    """Resizes square grey images with bilinear interpolation.

    Args:
        images: array of shape `(n, h, w)`.
        size: int. Output height and width.

    Returns:
        float32 array of shape `(n, size, size)`.

    Example:

    ```python
    big = resize_images(np.ones((2, 8, 8)), 28)  # (2, 28, 28)
    ```
    """
    received = images
    images = _as_array("images", images, "float64")
    if images.ndim != 3 or 0 in images.shape[1:]:
        raise ValueError(
            "`images` must have shape (n, height, width) with height and "
            f"width >= 1. Received: images={_shown(received)} of shape "
            f"{images.shape}"
        )
    if isinstance(size, bool) or not isinstance(
        size, (int, np.integer)
    ) or size < 1:
        raise ValueError(
            f"`size` must be a positive int. Received: size={size!r}"
        )
    rows = _interpolation_matrix(images.shape[1], size)
    cols = _interpolation_matrix(images.shape[2], size)
    return np.einsum("ij,njk,lk->nil", rows, images, cols).astype("float32")


def split_indices(labels, fractions, seed=0):
    """Stratified random split of `range(len(labels))`.

    Args:
        labels: non-empty 1-D array used for stratification.
        fractions: dict `{split_name: fraction}`; finite fractions >= 0
            that sum to 1.
        seed: int >= 0. Seed of the permutation.

    Returns:
        dict `{split_name: sorted index array}`; splits are disjoint and
        cover every index.

    Example:

    ```python
    parts = split_indices([0, 0, 1, 1], {"train": 0.5, "test": 0.5})
    ```
    """
    received = labels
    labels = _as_array("labels", labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(
            "`labels` must be a non-empty 1-D array. "
            f"Received: labels={_shown(received)} of shape {labels.shape}"
        )
    if not isinstance(fractions, dict) or not fractions:
        raise TypeError(
            "`fractions` must be a non-empty dict {split_name: fraction}. "
            f"Received: fractions={fractions!r}"
        )
    if not all(_is_real(f) and f >= 0 for f in fractions.values()) or (
        not np.isclose(sum(fractions.values()), 1.0)
    ):
        raise ValueError(
            "`fractions` must be finite numbers >= 0 that sum to 1. "
            f"Received: fractions={fractions}"
        )
    _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    names = list(fractions)
    parts = {name: [] for name in names}
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        bounds = np.round(
            np.cumsum([fractions[n] for n in names]) * len(members)
        ).astype(int)
        start = 0
        for name, stop in zip(names, bounds):
            parts[name].append(members[start:stop])
            start = stop
    return {name: np.sort(np.concatenate(parts[name])) for name in names}


def load_digits(
    tasks=("digit", "parity"),
    image_size=8,
    validation_fraction=0.0,
    test_fraction=0.2,
    flatten=False,
    seed=0,
):
    """Loads the bundled digits as a multi-task data set.

    Pixel values are scaled to [0, 1]. Splits are stratified by digit and
    deterministic given `seed`.

    Args:
        tasks: sequence of task names from `DIGIT_TASKS` (`"digit"`,
            `"parity"`, `"large"`).
        image_size: int >= 1. 8 keeps the original images; any other size
            resizes them bilinearly (28 gives MNIST-sized images).
        validation_fraction: float in [0, 1). Share held out for validation.
        test_fraction: float in (0, 1). Share held out for testing.
        flatten: bool. Return `(n, image_size**2)` vectors instead of
            `(n, image_size, image_size, 1)` images.
        seed: int >= 0. Seed of the split.

    Returns:
        dict with keys `"train"`, `"test"` and, when `validation_fraction`
        > 0, `"validation"`; each value is a `Split(x, y)` with `y` a dict
        `{task: int32 labels}`.

    Example:

    ```python
    data = load_digits(image_size=28, validation_fraction=0.1)
    x, y = data["train"]
    y["digit"][:5], y["parity"][:5]
    ```
    """
    from sklearn.datasets import load_digits as sklearn_digits

    received = tasks
    if isinstance(tasks, str):
        tasks = (tasks,)
    try:
        tasks = tuple(tasks)
    except TypeError:
        tasks = ()
    if not tasks or any(
        not isinstance(t, str) or t not in DIGIT_TASKS for t in tasks
    ):
        raise ValueError(
            f"`tasks` must be a non-empty sequence of {sorted(DIGIT_TASKS)}. "
            f"Received: tasks={received!r}"
        )
    _check_int("image_size", image_size, 1)
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not _is_real(value) or not 0.0 <= value < 1.0:
            raise ValueError(
                f"`{name}` must be a float in [0, 1). "
                f"Received: {name}={value!r}"
            )
    if not isinstance(flatten, (bool, np.bool_)):
        raise TypeError(
            f"`flatten` must be a bool. Received: flatten={flatten!r}"
        )
    _check_int("seed", seed, 0)
    if test_fraction <= 0 or validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            "`test_fraction` must be > 0 and the held-out fractions must sum "
            f"to less than 1. Received: test_fraction={test_fraction}, "
            f"validation_fraction={validation_fraction}"
        )

    bunch = sklearn_digits()
    images = bunch.images.astype("float32") / 16.0
    if image_size != 8:
        images = resize_images(images, image_size)
    images = images.reshape(len(images), -1) if flatten else images[..., None]
    digits = bunch.target

    fractions = {"train": 1.0 - validation_fraction - test_fraction}
    if validation_fraction > 0:
        fractions["validation"] = validation_fraction
    fractions["test"] = test_fraction
    indices = split_indices(digits, fractions, seed=seed)
    # shuffle each split so that batches are not sorted by class
    rng = np.random.default_rng(seed + 1)
    return {
        name: Split(
            images[order],
            {task: DIGIT_TASKS[task](digits[order]) for task in tasks},
        )
        for name, idx in indices.items()
        for order in [rng.permutation(idx)]
    }
