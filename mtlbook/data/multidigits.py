"""MultiDigits: two overlapping digits per image (a MultiMNIST analog).

MultiMNIST (Sabour et al., 2017) overlays two MNIST digits; Sener & Koltun
(2018) made it a multi-task benchmark by putting one digit in the top-left
and another in the bottom-right of a larger canvas, overlapping in the
middle, with the tasks "which digit is on the left" and "which on the
right". This is the same construction on scikit-learn's bundled digits.
"""

import numpy as np

from mtlbook.data.digits import Split, resize_images, split_indices


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(
        value, (int, np.integer)
    ) or value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}"
        )


def make_multidigits(n_train=4000, n_validation=500, n_test=1000,
                     image_size=24, digit_size=16, seed=0):
    """Makes a two-task data set of overlaid digit pairs.

    The 1,797 source digits are first split (stratified, 70/10/20) into
    train, validation and test pools; each image of a split overlays two
    digits drawn from that split's pool only, so no source image is shared
    between splits. The left digit is placed at the top-left corner of a
    `image_size` canvas and the right digit at the bottom-right corner, both
    upscaled to `digit_size`; pixels are combined with a maximum.

    Args:
        n_train: int. Number of training images.
        n_validation: int. Number of validation images (0 for none).
        n_test: int. Number of test images.
        image_size: int >= 2. Side of the square canvas.
        digit_size: int. Side of each digit; `digit_size < image_size`
            (the overlap is `2 * digit_size - image_size` pixels wide).
        seed: int >= 0. Seed of the pools and the pairs.

    Returns:
        dict `{"train", "validation" (if n_validation > 0), "test"}` of
        `Split(x, y)`: x float32 `(n, image_size, image_size, 1)` in [0, 1];
        y `{"left": int32, "right": int32}` digit classes.

    Example:

    ```python
    data = make_multidigits(n_train=2000)
    x, y = data["train"]
    y["left"][:3], y["right"][:3]
    ```

    Reference:
        Sabour et al., 2017, "Dynamic Routing Between Capsules" (MultiMNIST);
        Sener & Koltun, 2018, "Multi-Task Learning as Multi-Objective
        Optimization" (the left/right multi-task version).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    _check_count("n_train", n_train, 1)
    _check_count("n_validation", n_validation, 0)
    _check_count("n_test", n_test, 1)
    _check_count("image_size", image_size, 2)
    if (
        isinstance(digit_size, bool)
        or not isinstance(digit_size, (int, np.integer))
        or not 0 < digit_size < image_size
    ):
        raise ValueError(
            "`digit_size` must be an int in (0, image_size). "
            f"Received: digit_size={digit_size!r}, image_size={image_size}"
        )
    _check_count("seed", seed, 0)
    bunch = sklearn_digits()
    digits = resize_images(bunch.images / 16.0, digit_size)
    pools = split_indices(
        bunch.target, {"train": 0.7, "validation": 0.1, "test": 0.2}, seed=seed
    )
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    rng = np.random.default_rng(seed + 1)
    offset = image_size - digit_size
    splits = {}
    for name in ("train", "validation", "test"):
        if sizes[name] == 0:
            continue
        left = rng.choice(pools[name], sizes[name])
        right = rng.choice(pools[name], sizes[name])
        canvas = np.zeros((sizes[name], image_size, image_size), "float32")
        canvas[:, :digit_size, :digit_size] = digits[left]
        canvas[:, offset:, offset:] = np.maximum(
            canvas[:, offset:, offset:], digits[right]
        )
        splits[name] = Split(
            canvas[..., None],
            {"left": bunch.target[left].astype("int32"),
             "right": bunch.target[right].astype("int32")},
        )
    return splits
