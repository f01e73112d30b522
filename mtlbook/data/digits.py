"""scikit-learn's bundled handwritten digits with several task labels.

The 1,797 8x8 grey images ship with scikit-learn, so every chapter runs
offline on real handwriting. Images can be upscaled (bilinear) to the 28x28
of MNIST so that MNIST-sized models and code run unchanged.
"""

from typing import NamedTuple

import numpy as np


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
    images = np.asarray(images, dtype="float64")
    if images.ndim != 3:
        raise ValueError(
            "`images` must have shape (n, height, width). "
            f"Received: images.shape={images.shape}"
        )
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(
            f"`size` must be a positive int. Received: size={size!r}"
        )
    rows = _interpolation_matrix(images.shape[1], size)
    cols = _interpolation_matrix(images.shape[2], size)
    return np.einsum("ij,njk,lk->nil", rows, images, cols).astype("float32")


def split_indices(labels, fractions, seed=0):
    """Stratified random split of `range(len(labels))`.

    Args:
        labels: 1-D array used for stratification.
        fractions: dict `{split_name: fraction}`; fractions must sum to 1.
        seed: int. Seed of the permutation.

    Returns:
        dict `{split_name: sorted index array}`; splits are disjoint and
        cover every index.
    """
    labels = np.asarray(labels)
    total = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or not np.isclose(total, 1.0):
        raise ValueError(
            "`fractions` must be non-negative and sum to 1. "
            f"Received: fractions={fractions}"
        )
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
        image_size: int. 8 keeps the original images; any other size
            upscales them bilinearly (28 gives MNIST-sized images).
        validation_fraction: float in [0, 1). Share held out for validation.
        test_fraction: float in (0, 1). Share held out for testing.
        flatten: bool. Return `(n, image_size**2)` vectors instead of
            `(n, image_size, image_size, 1)` images.
        seed: int. Seed of the split.

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

    if isinstance(tasks, str):
        tasks = (tasks,)
    unknown = [t for t in tasks if t not in DIGIT_TASKS]
    if unknown or not tasks:
        raise ValueError(
            f"`tasks` must be a non-empty sequence of {sorted(DIGIT_TASKS)}. "
            f"Received: tasks={tuple(tasks)}"
        )
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(
                f"`{name}` must be a float in [0, 1). "
                f"Received: {name}={value!r}"
            )
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
