"""The synthetic regression tasks of the MMoE paper, with set correlation.

Ma et al. (2018) generate two regression tasks whose relatedness is one
number, the cosine between their weight vectors:

1. draw orthonormal `u1, u2` in R^d;
2. `w1 = c * u1`, `w2 = c * (p * u1 + sqrt(1 - p^2) * u2)`, so
   `cos(w1, w2) = p`;
3. `x ~ N(0, I_d)`;
4. `y_i = w_i . x + sum_j sin(alpha_j * w_i . x + beta_j) + noise_i`,
   `noise_i ~ N(0, sigma^2)`.

The paper calls `alpha_j`, `beta_j` "given parameters that control the
shape of the sinusoidal functions" and uses `m = 10` sinusoids, `c = 1`
and noise variance 0.01; it does not say how `alpha`, `beta` were chosen.
Two readings are offered (`waves`):

- `"fixed"` (the default): the constants `ALPHAS`, `BETAS` below, the same
  for every seed; only `u1, u2`, `x` and the noise depend on `seed`.
- `"drawn"`: `alpha_j, beta_j ~ N(0, 1)` drawn anew for every `seed` (from
  a random stream of their own, so `x`, the directions and the noise are
  those of `"fixed"`), as public re-implementations of the experiment do.
  Each seed is then a different pair of task *shapes* as well.

Because the sinusoids are non-linear, the correlation of the *labels* is
lower than `p`; `label_correlation` measures it.

By default both tasks use the same `alpha_j, beta_j`, as in the paper: at
`p = 0` the tasks look along orthogonal directions but share the form of
the function. `shared_waves=False` gives task B sinusoids of its own
(`ALPHAS_B`, `BETAS_B`), so that the tasks differ in form too.
"""

import numpy as np

from mtlbook.data.digits import Split

# Fixed constants, chosen once by hand in [-2, 2] and never changed: ten
# sinusoids of different frequencies and phases. Keeping them fixed across
# seeds keeps the task *shape* the same, so seeds only vary the directions
# and the sample (drawing them per seed made the seed spread larger than
# the effect of the correlation in our first experiments).
ALPHAS = np.array(
    [0.86, -0.67, 1.41, -1.22, 0.35, 1.87, -0.94, 0.52, -1.63, 1.10]
)
BETAS = np.array(
    [0.21, -1.05, 0.77, 1.33, -0.48, -1.71, 0.09, 1.52, -0.36, 0.95]
)
# Task B's own sinusoids for `shared_waves=False`, also chosen once by hand
# in [-2, 2] and never changed.
ALPHAS_B = np.array(
    [1.73, -0.52, 0.97, -1.48, 0.61, -1.95, 1.24, -0.83, 0.44, -1.31]
)
BETAS_B = np.array(
    [-0.62, 1.19, -1.37, 0.28, 1.64, -0.15, 0.83, -1.02, 0.55, 1.46]
)
SCALE = 1.0  # c
NOISE = 0.1  # sigma


def _check_int(name, value, minimum):
    """Raises unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(
        value, (int, np.integer)
    ) or value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")


def mmoe_weight_vectors(correlation, num_features=100, seed=0):
    """Returns `(w1, w2)` with `cos(w1, w2) == correlation` and norm `SCALE`.

    Args:
        correlation: float in [-1, 1].
        num_features: int >= 2. Dimension d.
        seed: int >= 0. Seed of the random orthonormal pair.

    Returns:
        tuple of two float64 arrays of shape `(num_features,)`.

    Example:

    ```python
    w1, w2 = mmoe_weight_vectors(0.5, num_features=16)
    float(w1 @ w2)  # 0.5
    ```
    """
    if (isinstance(correlation, bool)
            or not isinstance(correlation, (int, float))
            or not -1.0 <= correlation <= 1.0):
        raise ValueError(
            "`correlation` must be a float in [-1, 1]. "
            f"Received: correlation={correlation!r}"
        )
    _check_int("num_features", num_features, 2)
    _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(num_features, 2)))
    u1, u2 = basis[:, 0], basis[:, 1]
    w1 = SCALE * u1
    w2 = SCALE * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
    return w1, w2


WAVES = ("fixed", "drawn")


def mmoe_waves(seed=0, waves="fixed", shared_waves=True):
    """The sinusoids' `(alphas_a, betas_a, alphas_b, betas_b)` of a data set.

    Args:
        seed: int >= 0. Seed of the data set (used by `waves="drawn"`
            only).
        waves: `"fixed"` (the constants `ALPHAS`, `BETAS`; `ALPHAS_B`,
            `BETAS_B` for task B when `shared_waves=False`) or `"drawn"`
            (ten `alpha_j, beta_j ~ N(0, 1)` per task shape, drawn from
            `seed`).
        shared_waves: bool. Whether task B uses task A's sinusoids.

    Returns:
        tuple of four float64 arrays of shape `(10,)`.

    Example:

    ```python
    alphas, betas, _, _ = mmoe_waves(seed=3, waves="drawn")
    ```
    """
    if not isinstance(waves, str) or waves not in WAVES:
        raise ValueError(
            f"`waves` must be one of {WAVES}. Received: waves={waves!r}"
        )
    _check_bool("shared_waves", shared_waves)
    _check_int("seed", seed, 0)
    if waves == "fixed":
        own = (ALPHAS_B, BETAS_B)
        return (ALPHAS, BETAS) + ((ALPHAS, BETAS) if shared_waves else own)
    # a stream of its own: inputs, directions and noise stay as in "fixed"
    rng = np.random.default_rng([seed, 2018])
    alphas, betas, alphas_b, betas_b = rng.normal(size=(4, len(ALPHAS)))
    if shared_waves:
        alphas_b, betas_b = alphas, betas
    return alphas, betas, alphas_b, betas_b


def _labels(x, w, rng, alphas=ALPHAS, betas=BETAS):
    z = x @ w
    waves = np.sin(np.outer(z, alphas) + betas).sum(axis=1)
    return (z + waves + rng.normal(scale=NOISE, size=len(x))).astype("float32")


def make_mmoe_synthetic(n_train=8000, n_validation=1000, n_test=2000,
                        correlation=0.9, num_features=100, seed=0,
                        shared_waves=True, waves="fixed"):
    """Makes the MMoE paper's two regression tasks with set correlation.

    Args:
        n_train, n_validation, n_test: ints. Split sizes (validation may
            be 0).
        correlation: float in [-1, 1]. Cosine between the tasks' weight
            vectors.
        num_features: int. Input dimension d (100 in the paper).
        seed: int >= 0. Seed of the weight vectors, inputs and noise.
        shared_waves: bool. If True (the default, as in the paper), both
            tasks use the sinusoids `ALPHAS`, `BETAS`; if False, task B
            uses `ALPHAS_B`, `BETAS_B`. Inputs, directions and noise are the
            same either way.
        waves: `"fixed"` (default) or `"drawn"`. How the sinusoids'
            `alpha_j, beta_j` are chosen: the module's constants for every
            seed, or drawn from `N(0, 1)` per seed (see `mmoe_waves`).

    Returns:
        dict of `Split(x, y)`: x float32 `(n, num_features)`, y
        `{"task_a": float32 (n,), "task_b": float32 (n,)}`.

    Example:

    ```python
    data = make_mmoe_synthetic(correlation=0.5, num_features=16)
    label_correlation(data["train"])  # below 0.5: the sinusoids decorrelate
    # orthogonal directions and different sinusoids: unrelated in form too
    data = make_mmoe_synthetic(correlation=0.0, shared_waves=False)
    # sinusoids drawn per seed, as re-implementations of the paper do
    data = make_mmoe_synthetic(correlation=0.5, seed=3, waves="drawn")
    ```

    Reference:
        Ma et al., 2018, "Modeling Task Relationships in Multi-task Learning
        with Multi-gate Mixture-of-Experts".
    """
    for name, value, minimum in (("n_train", n_train, 1),
                                 ("n_validation", n_validation, 0),
                                 ("n_test", n_test, 1)):
        _check_int(name, value, minimum)
    _check_bool("shared_waves", shared_waves)
    _check_int("seed", seed, 0)
    alphas, betas, alphas_b, betas_b = mmoe_waves(seed, waves, shared_waves)
    w1, w2 = mmoe_weight_vectors(correlation, num_features, seed)
    rng = np.random.default_rng(seed + 1)
    splits = {}
    for name, size in (("train", n_train), ("validation", n_validation),
                       ("test", n_test)):
        if size == 0:
            continue
        x = rng.normal(size=(size, num_features))
        splits[name] = Split(
            x.astype("float32"),
            {"task_a": _labels(x, w1, rng, alphas, betas),
             "task_b": _labels(x, w2, rng, alphas_b, betas_b)},
        )
    return splits


def label_correlation(split):
    """Pearson correlation between the two tasks' labels of a `Split`.

    Args:
        split: `Split` with `y["task_a"]` and `y["task_b"]`.

    Returns:
        float in [-1, 1].

    Raises:
        ValueError: if `split` lacks the two tasks, or their labels differ
            in length, have fewer than 2 entries or are constant.

    Example:

    ```python
    label_correlation(make_mmoe_synthetic(correlation=1.0)["test"])  # ~1
    ```
    """
    y = getattr(split, "y", None)
    if not isinstance(y, dict) or not {"task_a", "task_b"} <= set(y):
        raise ValueError(
            "`split` must be a Split whose `y` has 'task_a' and 'task_b'. "
            f"Received: split of type {type(split).__name__}"
        )
    a = np.asarray(y["task_a"], dtype="float64").ravel()
    b = np.asarray(y["task_b"], dtype="float64").ravel()
    if len(a) != len(b) or len(a) < 2 or a.std() == 0 or b.std() == 0:
        raise ValueError(
            "`split` labels must be two equally long, non-constant arrays "
            f"of at least 2 entries. Received lengths {len(a)} and {len(b)}"
        )
    return float(np.corrcoef(a, b)[0, 1])
