"""Two moons in a source domain and a rotated target domain.

The toy problem of domain-adversarial training (Ganin et al., 2016): the
source domain is scikit-learn's two interleaving half circles, the target
domain is the same distribution rotated about the source mean, so a
classifier that fits the source boundary tightly misclassifies the tips of
the rotated moons.
"""

import numbers

import numpy as np

from mtlbook.data.digits import Split

DOMAINS = ("source", "target")


def _check(name, value, low, kind=numbers.Real):
    if not isinstance(value, kind) or isinstance(value, bool) or (
        not np.isfinite(value) or value < low
    ):
        what = "an int" if kind is numbers.Integral else "a finite number"
        raise ValueError(
            f"`{name}` must be {what} >= {low}. Received: {name}={value!r}"
        )


def rotate(points, angle_degrees, center):
    """Rotates 2-D `points` counter-clockwise by `angle_degrees` about `center`.

    Args:
        points: float array `(n, 2)`.
        angle_degrees: float. Rotation angle in degrees.
        center: array `(2,)`. Fixed point of the rotation.

    Returns:
        float32 array `(n, 2)`: `(points - center) @ R.T + center`.

    Example:

    ```python
    rotate([[1.0, 0.0]], 90.0, center=(0.0, 0.0))  # [[0, 1]]
    ```
    """
    if not isinstance(angle_degrees, numbers.Real) or isinstance(
        angle_degrees, bool
    ) or not np.isfinite(angle_degrees):
        raise TypeError(
            "`angle_degrees` must be a finite real number. "
            f"Received: angle_degrees={angle_degrees!r}"
        )
    points = np.asarray(points, dtype="float64")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(
            "`points` must have shape (n, 2). "
            f"Received: points.shape={points.shape}"
        )
    if np.shape(center) != (2,) or not np.all(np.isfinite(center)):
        raise ValueError(
            "`center` must be 2 finite numbers. "
            f"Received: center={center!r}"
        )
    theta = np.deg2rad(angle_degrees)
    matrix = np.array([[np.cos(theta), -np.sin(theta)],
                       [np.sin(theta), np.cos(theta)]])
    center = np.asarray(center, dtype="float64")
    moved = (points - center) @ matrix.T + center
    return moved.astype("float32")


def make_shifted_moons(n_per_domain=500, angle_degrees=35.0, noise=0.1,
                       test_fraction=0.5, seed=0):
    """Labelled source moons and target moons rotated about the source mean.

    Both domains are drawn independently with `sklearn.datasets.make_moons`
    (`n_per_domain` points each, Gaussian noise `noise`); the target points
    are then rotated by `angle_degrees` about the mean of the source points.
    Each domain is split (stratified, deterministic) into a training and a
    test part. In unsupervised domain adaptation the target training labels
    are not used for training; they are returned for the upper bound
    "train on target".

    Args:
        n_per_domain: int >= 4. Points per domain (before the split).
        angle_degrees: float. Rotation of the target domain, in degrees.
        noise: float >= 0. Standard deviation of the noise of `make_moons`.
        test_fraction: float in (0, 1). Share of each domain held out.
        seed: int >= 0. Seed of the points and of the split.

    Returns:
        dict with keys `"source_train"`, `"source_test"`, `"target_train"`,
        `"target_test"`; each value is a `Split(x, y)` with `x` float32
        `(n, 2)` and `y` int32 `(n,)` labels in {0, 1}.

    Example:

    ```python
    moons = make_shifted_moons(n_per_domain=500, angle_degrees=35.0)
    x_source, y_source = moons["source_train"]
    x_target = moons["target_train"].x        # labels unused by DANN
    ```

    Reference:
        Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks".
    """
    from sklearn.datasets import make_moons

    _check("n_per_domain", n_per_domain, 4, kind=numbers.Integral)
    if not isinstance(angle_degrees, numbers.Real) or isinstance(
        angle_degrees, bool
    ) or not np.isfinite(angle_degrees):
        raise TypeError(
            "`angle_degrees` must be a finite real number. "
            f"Received: angle_degrees={angle_degrees!r}"
        )
    _check("noise", noise, 0.0)
    if (not isinstance(test_fraction, numbers.Real)
            or isinstance(test_fraction, bool)
            or not 0.0 < test_fraction < 1.0):
        raise ValueError(
            "`test_fraction` must be a number in (0, 1). "
            f"Received: test_fraction={test_fraction!r}"
        )
    _check("seed", seed, 0, kind=numbers.Integral)
    streams = np.random.SeedSequence(seed).generate_state(3)
    points = {}
    for domain, stream in zip(DOMAINS, streams[:2]):
        x, y = make_moons(n_per_domain, noise=noise,
                          random_state=int(stream) % 2**31)
        points[domain] = [x, y.astype("int32")]
    points["target"][0] = rotate(points["target"][0], angle_degrees,
                                 points["source"][0].mean(axis=0))
    rng = np.random.default_rng(streams[2])
    out = {}
    for domain in DOMAINS:
        x, y = points[domain]
        test = np.zeros(len(y), dtype=bool)
        for label in (0, 1):
            members = rng.permutation(np.flatnonzero(y == label))
            test[members[:int(round(test_fraction * len(members)))]] = True
        for name, mask in (("train", ~test), ("test", test)):
            order = rng.permutation(np.flatnonzero(mask))
            out[f"{domain}_{name}"] = Split(x[order].astype("float32"),
                                            y[order])
    return out
