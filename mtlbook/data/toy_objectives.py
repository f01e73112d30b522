"""The two-objective toy of the PCGrad and CAGrad papers.

Yu et al. (2020, Fig. 1) and Liu et al. (2021, Fig. 1) illustrate gradient
conflict with two losses of a 2-D parameter `x = (x1, x2)`. Above the
`x1` axis each loss is the log of the distance to a curved valley (deep,
narrow, different for the two tasks); below it each is a wide quadratic
bowl, centred at `x1 = +7` for task 1 and `x1 = -7` for task 2. The
Pareto set is the curve joining the two bowls' minima along
`x2 ~ -8.4`, and the minimum of the average loss is its middle point
`(0, -8.355)`. This module defines the losses (as in the CAGrad
repository's `toy.py`), their Pareto set, and Adam descent along any
combination of the two task gradients.
"""

import math

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


# The losses' floor inside the log: |.| is clamped at this value.
LOWER = 0.000005
# The papers' starting points (CAGrad's `toy.py`).
STARTS = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))


def toy_losses(x):
    """The two task losses at `x`.

    `f_i = c1 * (log max(|a_i|, LOWER) + 6) + c2 * q_i` with
    `a_1 = (-x1 - 7) / 2 - tanh(-x2)`,
    `a_2 = (-x1 + 3) / 2 + tanh(-x2) + 2`,
    `q_1 = ((x1 - 7)^2 + 0.1 (x2 + 8)^2) / 10 - 20`,
    `q_2 = ((x1 + 7)^2 + 0.1 (x2 + 8)^2) / 10 - 20`,
    `c1 = max(tanh(x2 / 2), 0)` and `c2 = max(tanh(-x2 / 2), 0)`.

    Args:
        x: tensor or array of shape `(..., 2)`, the points `(x1, x2)`.

    Returns:
        Tensor of shape `(..., 2)`: the losses of task 1 and task 2.

    Example:

    ```python
    toy_losses([0.0, -8.355])  # both about -15.09
    ```

    Reference:
        Liu et al., 2021, "Conflict-Averse Gradient Descent for Multi-task
        Learning" (after Yu et al., 2020, "Gradient Surgery for Multi-Task
        Learning").
    """
    from keras import ops

    x = ops.convert_to_tensor(x, "float32")
    if len(x.shape) < 1 or x.shape[-1] != 2:
        raise ValueError(
            "`x` must have shape (..., 2). "
            f"Received: x.shape={tuple(x.shape)}"
        )
    x1, x2 = x[..., 0], x[..., 1]
    valley_1 = ops.abs(0.5 * (-x1 - 7.0) - ops.tanh(-x2))
    valley_2 = ops.abs(0.5 * (-x1 + 3.0) + ops.tanh(-x2) + 2.0)
    log_1 = ops.log(ops.maximum(valley_1, LOWER)) + 6.0
    log_2 = ops.log(ops.maximum(valley_2, LOWER)) + 6.0
    bowl_1 = ((x1 - 7.0) ** 2 + 0.1 * (x2 + 8.0) ** 2) / 10.0 - 20.0
    bowl_2 = ((x1 + 7.0) ** 2 + 0.1 * (x2 + 8.0) ** 2) / 10.0 - 20.0
    upper = ops.maximum(ops.tanh(0.5 * x2), 0.0)
    lower = ops.maximum(ops.tanh(-0.5 * x2), 0.0)
    return ops.stack(
        [log_1 * upper + bowl_1 * lower, log_2 * upper + bowl_2 * lower],
        axis=-1,
    )


def pareto_set(num=201):
    """Points of the Pareto set of `toy_losses`.

    Each point minimises `w f_1 + (1 - w) f_2` for one `w` in `[0, 1]`.
    In the lower half-plane, where the minima lie, that minimiser has
    `x1 = 7 (2 w - 1)` in closed form; `x2` is found by a bounded 1-D
    search. (The losses are convex in `x1` there, so the weighted sums
    reach the whole set.)

    Args:
        num: int >= 2. Number of points (evenly spaced weights).

    Returns:
        float64 array `(num, 2)`, from task 2's minimum `(-7, ...)` to task
        1's `(7, ...)`.
    """
    _check_int("num", num, 2)
    from scipy.optimize import minimize_scalar

    points = []
    for weight in np.linspace(0.0, 1.0, num):
        x1 = 7.0 * (2.0 * weight - 1.0)

        def weighted(x2, x1=x1, weight=weight):
            losses = _losses_float64(np.array([x1, x2]))
            return weight * losses[0] + (1.0 - weight) * losses[1]

        x2 = minimize_scalar(
            weighted, bounds=(-11.0, 0.0), method="bounded",
            options={"xatol": 1e-9},
        ).x
        points.append((x1, x2))
    return np.array(points)


def _losses_float64(x):
    """NumPy float64 copy of `toy_losses`, for the Pareto-set search."""
    x1, x2 = x[..., 0], x[..., 1]
    upper = np.maximum(np.tanh(0.5 * x2), 0.0)
    lower = np.maximum(np.tanh(-0.5 * x2), 0.0)
    bowl = 0.1 * (x2 + 8.0) ** 2 / 10.0 - 20.0
    log_1 = np.log(np.maximum(np.abs(0.5 * (-x1 - 7) - np.tanh(-x2)),
                              LOWER)) + 6
    log_2 = np.log(np.maximum(np.abs(0.5 * (-x1 + 3) + np.tanh(-x2) + 2),
                              LOWER)) + 6
    return np.stack([
        log_1 * upper + ((x1 - 7.0) ** 2 / 10.0 + bowl) * lower,
        log_2 * upper + ((x1 + 7.0) ** 2 / 10.0 + bowl) * lower,
    ], axis=-1)


def distance_to_set(points, reference):
    """Euclidean distance of each point to the nearest reference point.

    Args:
        points: array `(n, 2)` or `(2,)`.
        reference: array `(m, 2)`, e.g. `pareto_set()`.

    Returns:
        float64 array `(n,)` (a float for a single point).

    Example:

    ```python
    distance_to_set([0.0, 0.0], [[3.0, 4.0], [6.0, 8.0]])  # 5.0
    ```
    """
    points = np.asarray(points, "float64")
    reference = np.asarray(reference, "float64")
    single = points.ndim == 1
    points = np.atleast_2d(points)
    if points.ndim != 2 or points.shape[-1] != 2 or reference.ndim != 2 or (
            reference.shape[-1] != 2) or len(reference) == 0:
        raise ValueError(
            "`points` must have shape (n, 2) or (2,) and `reference` shape "
            "(m, 2) with m >= 1. Received: "
            f"points.shape={points.shape}, "
            f"reference.shape={reference.shape}"
        )
    for name, array in (("points", points), ("reference", reference)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"`{name}` must be finite. Received NaN or inf")
    distances = np.sqrt(
        ((points[:, None, :] - reference[None, :, :]) ** 2).sum(-1)
    ).min(axis=1)
    return float(distances[0]) if single else distances


def descend(combine, starts, steps=100_000, learning_rate=0.001,
            record_every=100):
    """Adam on `x` along a combination of the two task gradients.

    At each step the `(2, 2)` matrix `G` of task gradients (row `i`:
    gradient of `f_i`) is passed to `combine`, whose `(2,)` result is the
    update direction given to Adam (`beta_1 = 0.9`, `beta_2 = 0.999`,
    `epsilon = 1e-8`, as in the papers' PyTorch code). The whole loop is
    one XLA-compiled TensorFlow graph (compiled once for all starts), so
    `combine` must be made of TensorFlow ops (`mtlbook.weighting.pcgrad`
    and friends are).

    Args:
        combine: callable `(G, step) -> (2,)` tensor, e.g.
            `lambda g, step: pcgrad(g, seed=0, step=step)`.
        starts: pair of floats, or array `(n, 2)` of starting points.
        steps: int >= 1. Number of Adam steps.
        learning_rate: float > 0.
        record_every: int >= 1. Keep every `record_every`-th point.

    Returns:
        float32 array `(n, ceil(steps / record_every) + 1, 2)` of
        trajectories, from each start to its final point (always kept);
        `(ceil(steps / record_every) + 1, 2)` for a single pair.

    Example:

    ```python
    path = descend(lambda g, step: g[0] + g[1], STARTS[0], steps=1000)
    ```
    """
    import tensorflow as tf

    if not callable(combine):
        raise TypeError(
            "`combine` must be a callable (G, step) -> direction. "
            f"Received: combine={combine!r}"
        )
    _check_int("steps", steps, 1)
    _check_int("record_every", record_every, 1)
    if isinstance(learning_rate, bool) or not isinstance(
        learning_rate, (int, float)
    ) or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(
            "`learning_rate` must be a finite float > 0. "
            f"Received: learning_rate={learning_rate!r}"
        )
    starts = np.asarray(starts, "float32")
    single = starts.shape == (2,)
    starts = np.atleast_2d(starts)
    if starts.ndim != 2 or starts.shape[-1] != 2 or len(starts) == 0:
        raise ValueError(
            "`starts` must be a pair (x1, x2) or have shape (n, 2), n >= 1. "
            f"Received: starts.shape={starts.shape}"
        )
    if not np.all(np.isfinite(starts)):
        raise ValueError(
            f"`starts` must be finite. Received: starts={starts.tolist()}"
        )
    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-8
    records = -(-steps // record_every)

    @tf.function(jit_compile=True)
    def run(x):
        def body(step, x, moment, velocity, path):
            with tf.GradientTape() as tape:
                tape.watch(x)
                losses = toy_losses(x)
            gradients = tape.jacobian(losses, x)  # (2 tasks, 2 params)
            direction = tf.reshape(combine(gradients, step), (2,))
            moment = beta_1 * moment + (1.0 - beta_1) * direction
            velocity = beta_2 * velocity + (1.0 - beta_2) * direction ** 2
            count = tf.cast(step + 1, "float32")
            corrected = moment / (1.0 - beta_1 ** count)
            scale = tf.sqrt(velocity / (1.0 - beta_2 ** count)) + epsilon
            x = x - learning_rate * corrected / scale
            keep = tf.logical_or((step + 1) % record_every == 0,
                                 step + 1 == steps)
            path = tf.cond(
                keep,
                lambda: path.write(tf.cast((step + record_every) //
                                           record_every, "int32"), x),
                lambda: path,
            )
            return step + 1, x, moment, velocity, path

        path = tf.TensorArray("float32", size=records + 1).write(0, x)
        zeros = tf.zeros((2,))
        *_, path = tf.while_loop(
            lambda step, *_: step < steps, body,
            (tf.constant(0, "int64"), x, zeros, zeros, path),
        )
        return path.stack()

    paths = np.stack([run(tf.constant(start)).numpy() for start in starts])
    return paths[0] if single else paths
