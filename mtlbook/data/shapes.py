"""Shapes: rendered sprites whose latent factors are several tasks at once.

Each image shows one shape (square, circle or triangle) in one colour (red,
green or blue) on a dark, slightly noisy background, with a random size,
rotation and position. All factors are drawn independently, and each is a
task: two classification tasks and four regression tasks.
"""

import numpy as np

from mtlbook.data.digits import Split

SHAPES = ("square", "circle", "triangle")
COLORS = {
    "red": (0.9, 0.2, 0.2),
    "green": (0.2, 0.85, 0.3),
    "blue": (0.25, 0.35, 0.95),
}
# rotational symmetry period of each shape, in radians (circle: none)
_PERIOD = {"square": np.pi / 2, "circle": None, "triangle": 2 * np.pi / 3}


def _inside(shape, u, v):
    """Mask of the unit shape in its own frame (u, v in units of size)."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "circle":
        return u**2 + v**2 <= 0.9**2
    # equilateral triangle with circumradius 1, one vertex pointing up
    inside = v >= -0.5
    for angle in (np.pi / 6, 5 * np.pi / 6):
        inside &= u * np.cos(angle) + v * np.sin(angle) <= 0.5
    return inside


def _render(factors, image_size, rng):
    n = len(factors["shape"])
    grid = np.arange(image_size) + 0.5
    px, py = grid[None, None, :], grid[None, :, None]  # column, row
    half = factors["half_size"][:, None, None]
    dx = (px - factors["cx"][:, None, None]) / half
    dy = (factors["cy"][:, None, None] - py) / half  # y up
    cos, sin = np.cos(-factors["angle"]), np.sin(-factors["angle"])
    u = dx * cos[:, None, None] - dy * sin[:, None, None]
    v = dx * sin[:, None, None] + dy * cos[:, None, None]
    mask = np.zeros((n, image_size, image_size), bool)
    for index, shape in enumerate(SHAPES):
        rows = factors["shape"] == index
        mask[rows] = _inside(shape, u[rows], v[rows])
    palette = np.array(list(COLORS.values()), "float32")[factors["color"]]
    images = rng.uniform(0.0, 0.1, (n, image_size, image_size, 3))
    images = images.astype("float32")
    images = np.where(mask[..., None], palette[:, None, None, :], images)
    return images.astype("float32")


def make_shapes(n_train=4000, n_validation=500, n_test=1000, image_size=32,
                seed=0):
    """Makes rendered shapes with six independent factors as tasks.

    Factors and their labels:

    - `shape`: int32 class, 0 square, 1 circle, 2 triangle (`SHAPES`).
    - `color`: int32 class, 0 red, 1 green, 2 blue (`COLORS`).
    - `scale`: float32 in [0, 1]; the shape's half-size goes linearly from
      0.12 to 0.22 of `image_size`.
    - `rotation`: float32 in [0, 1): the angle as a fraction of the shape's
      symmetry period (90 degrees for squares, 120 for triangles), so equal
      images have equal labels. Circles have no visible rotation: their
      label is 0.
    - `x`, `y`: float32 in [0, 1], the centre's position from left to right
      and from top to bottom, within a margin that keeps the shape inside.

    Args:
        n_train, n_validation, n_test: ints. Split sizes (validation may
            be 0). Every image is drawn independently.
        image_size: int >= 16. Side of the square RGB images.
        seed: int >= 0. Seed of the factors and the background noise.

    Returns:
        dict of `Split(x, y)`: x float32 `(n, image_size, image_size, 3)` in
        [0, 1]; y a dict with the six tasks above.

    Example:

    ```python
    data = make_shapes(n_train=2000)
    x, y = data["train"]
    y["shape"][:4], y["scale"][:4]
    ```
    """
    for name, value, minimum in (("n_train", n_train, 1),
                                 ("n_validation", n_validation, 0),
                                 ("n_test", n_test, 1),
                                 ("image_size", image_size, 16),
                                 ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(
            value, (int, np.integer)
        ) or value < minimum:
            raise ValueError(
                f"`{name}` must be an int >= {minimum}. "
                f"Received: {name}={value!r}"
            )
    rng = np.random.default_rng(seed)
    splits = {}
    for name, size in (("train", n_train), ("validation", n_validation),
                       ("test", n_test)):
        if size == 0:
            continue
        shape = rng.integers(0, len(SHAPES), size)
        color = rng.integers(0, len(COLORS), size)
        scale = rng.uniform(0.0, 1.0, size)
        rotation = rng.uniform(0.0, 1.0, size)
        x = rng.uniform(0.0, 1.0, size)
        y = rng.uniform(0.0, 1.0, size)
        half_size = (0.12 + 0.10 * scale) * image_size
        margin = 0.25 * image_size
        periods = np.array([_PERIOD[s] or 0.0 for s in SHAPES])[shape]
        rotation = np.where(periods > 0, rotation, 0.0)
        factors = {
            "shape": shape, "color": color, "half_size": half_size,
            "angle": rotation * periods,
            "cx": margin + x * (image_size - 2 * margin),
            "cy": margin + y * (image_size - 2 * margin),
        }
        splits[name] = Split(
            _render(factors, image_size, rng),
            {"shape": shape.astype("int32"), "color": color.astype("int32"),
             "scale": scale.astype("float32"),
             "rotation": rotation.astype("float32"),
             "x": x.astype("float32"), "y": y.astype("float32")},
        )
    return splits
