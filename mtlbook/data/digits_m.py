"""Digits-M: digits blended with colour photo patches (an MNIST-M analog).

MNIST-M (Ganin et al., 2016) replaces the black background of MNIST digits
with patches of colour photographs: each pixel is `|patch - digit|`, per
channel, so the digit shows as an inverted-colour stroke on a textured
background. Here the digits are scikit-learn's bundled ones and the photos
are scikit-learn's two bundled sample images, so it works offline.
"""

import numpy as np

from mtlbook.data.digits import Split, load_digits


def _photos():
    from sklearn.datasets import load_sample_images

    return [
        image.astype("float32") / 255.0
        for image in load_sample_images().images
    ]


def blend_with_patches(images, seed=0):
    """Blends grey images `(n, s, s)` in [0, 1] with random photo patches.

    Args:
        images: array `(n, s, s)` with values in [0, 1]; `s` smaller than
            the sample photos (427 pixels).
        seed: int >= 0. Seed of the photo and patch choice.

    Returns:
        float32 array `(n, s, s, 3)`: `|patch - image|` per channel.

    Example:

    ```python
    colour = blend_with_patches(np.zeros((2, 16, 16)))  # (2, 16, 16, 3)
    ```
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(
            "`images` must have shape (n, size, size). "
            f"Received: images.shape={images.shape}"
        )
    if isinstance(seed, bool) or not isinstance(
        seed, (int, np.integer)
    ) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0. Received: seed={seed!r}")
    size = images.shape[1]
    rng = np.random.default_rng(seed)
    photos = _photos()
    largest = min(min(photo.shape[:2]) for photo in photos) - 1
    if not 1 <= size <= largest:
        raise ValueError(
            f"`images` must be between 1 and {largest} pixels wide (the "
            "patches come from photos of that size). "
            f"Received: images.shape={images.shape}"
        )
    out = np.empty(images.shape + (3,), dtype="float32")
    for index, image in enumerate(images):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - size)
        left = rng.integers(photo.shape[1] - size)
        patch = photo[top:top + size, left:left + size]
        out[index] = np.abs(patch - image[..., None])
    return out


def make_digits_m(tasks=("digit",), image_size=28, validation_fraction=0.0,
                  test_fraction=0.2, seed=0):
    """The bundled digits on photo backgrounds, as a multi-task data set.

    Splits are the same as `load_digits` with the same arguments (so a
    source/target pair made with the same `seed` shares no test image with
    the other's training set); each image gets its own random patch of one
    of scikit-learn's two sample photographs.

    Args:
        tasks: task names from `mtlbook.data.DIGIT_TASKS`.
        image_size: int in [1, 426]. Side of the square images (digits
            are upscaled).
        validation_fraction: float in [0, 1).
        test_fraction: float in (0, 1).
        seed: int >= 0. Seed of the split and of the patches.

    Returns:
        dict of `Split(x, y)`; `x` is float32 `(n, image_size, image_size, 3)`
        in [0, 1].

    Example:

    ```python
    source = load_digits(image_size=16)          # grey digits
    target = make_digits_m(image_size=16)        # the same digits, in colour
    ```

    Reference:
        Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks".
    """
    if isinstance(image_size, (int, np.integer)) and not isinstance(
        image_size, bool
    ) and image_size > 426:
        raise ValueError(
            "`image_size` must be at most 426 (the patches come from "
            f"427-pixel-high photos). Received: image_size={image_size}"
        )
    splits = load_digits(tasks=tasks, image_size=image_size,
                         validation_fraction=validation_fraction,
                         test_fraction=test_fraction, seed=seed)
    return {
        name: Split(
            blend_with_patches(split.x[..., 0], seed=seed + offset), split.y
        )
        for offset, (name, split) in enumerate(splits.items(), start=1)
    }
