"""Multi-task evaluation: Δm against single-task baselines, paired seeds.

- `delta_m`: the mean over tasks of each task's relative change against its
  single-task baseline, sign-aware (Maninis et al., 2019), in percent;
  positive means better than the baselines.
- `paired_difference`: the mean difference of two methods run on the same
  seeds, with a Student-t confidence interval over the seeds.
"""

import math
import numbers
from typing import NamedTuple

import numpy as np


def delta_m(results, baselines, lower_is_better=()):
    """Multi-task performance Δm, in percent (Maninis et al., 2019).

    `Δm = 100 / T * sum_t (-1)^{l_t} (M_t - B_t) / B_t`, with `M_t` the
    multi-task model's metric on task `t`, `B_t` the single-task baseline's
    and `l_t = 1` when lower is better for that metric (a loss, an error
    rate) and 0 when higher is better (accuracy). Positive: better than the
    baselines on average.

    Args:
        results: mapping task -> float, the multi-task model's metrics.
        baselines: mapping task -> float (nonzero), the single-task
            baselines' metrics; the same tasks as `results`.
        lower_is_better: collection of task names whose metric is better
            when lower.

    Returns:
        float, Δm in percent.

    Example:

    ```python
    delta_m({"digit": 0.95, "size": 0.20}, {"digit": 0.90, "size": 0.25},
            lower_is_better={"size"})  # (5.56 + 20.0) / 2 = 12.78
    ```

    Reference:
        Maninis et al., 2019, "Attentive Single-Tasking of Multiple Tasks".
    """
    for name, value in (("results", results), ("baselines", baselines)):
        if not hasattr(value, "keys") or len(value) == 0:
            raise TypeError(
                f"`{name}` must be a non-empty mapping task -> metric. "
                f"Received: {name}={value!r}"
            )
    if set(results) != set(baselines):
        raise ValueError(
            "`results` and `baselines` must have the same tasks. Received: "
            f"results tasks {sorted(results)}, baselines tasks "
            f"{sorted(baselines)}"
        )
    if isinstance(lower_is_better, str):
        lower_is_better = (lower_is_better,)
    if isinstance(lower_is_better, dict) or not isinstance(
        lower_is_better, (list, tuple, set, frozenset)
    ) or not all(isinstance(task, str) for task in lower_is_better):
        raise TypeError(
            "`lower_is_better` must be a task name or a list, tuple or set "
            f"of task names. Received: lower_is_better={lower_is_better!r}"
        )
    unknown = set(lower_is_better) - set(results)
    if unknown:
        raise ValueError(
            "`lower_is_better` must name tasks of `results`. Received "
            f"unknown tasks: {sorted(unknown)}"
        )
    total = 0.0
    for task in results:
        m, b = results[task], baselines[task]
        for name, value in (("results", m), ("baselines", b)):
            if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                    or not math.isfinite(value)):
                raise ValueError(
                    f"`{name}[{task!r}]` must be a finite number. "
                    f"Received: {value!r}"
                )
        if b == 0:
            raise ValueError(
                f"`baselines[{task!r}]` must be nonzero (Δm divides by it). "
                f"Received: {b!r}"
            )
        sign = -1.0 if task in lower_is_better else 1.0
        total += sign * (m - b) / abs(b)
    return 100.0 * total / len(results)


class PairedDifference(NamedTuple):
    """Mean of `a - b` over paired seeds and its confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self):
        """True when the whole interval lies on one side of zero."""
        return self.low > 0 or self.high < 0


def paired_difference(a, b, confidence=0.95):
    """Mean difference `a - b` over paired runs, with a t-interval.

    The runs are paired: `a[i]` and `b[i]` share seed `i` (data order,
    initial weights), so the interval is computed on the differences, which
    removes the seed-to-seed variation both methods share.

    Args:
        a, b: 1-D sequences of floats of equal length >= 2, one entry per
            seed.
        confidence: float in (0, 1). Coverage of the interval.

    Returns:
        `PairedDifference(mean, low, high, n)`.

    Example:

    ```python
    d = paired_difference(pcgrad_accuracy, equal_accuracy)
    print(f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]")
    ```
    """
    if (not isinstance(confidence, numbers.Real)
            or isinstance(confidence, bool)
            or not 0.0 < confidence < 1.0):
        raise ValueError(
            f"`confidence` must be in (0, 1). Received: confidence="
            f"{confidence!r}"
        )
    arrays = []
    for name, value in (("a", a), ("b", b)):
        try:
            array = np.asarray(value, dtype="float64")
        except (TypeError, ValueError):
            raise TypeError(
                f"`{name}` must be a sequence of numbers. Received: "
                f"{name}={value!r}"
            ) from None
        if array.ndim != 1 or len(array) < 2:
            raise ValueError(
                f"`{name}` must be 1-D with at least 2 entries (one per "
                f"seed). Received shape {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"`{name}` must be finite. Received: {value!r}")
        arrays.append(array)
    if len(arrays[0]) != len(arrays[1]):
        raise ValueError(
            "`a` and `b` must have one entry per seed each. Received "
            f"lengths {len(arrays[0])} and {len(arrays[1])}"
        )
    from scipy import stats

    difference = arrays[0] - arrays[1]
    n = len(difference)
    mean = float(difference.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)
                 * difference.std(ddof=1) / math.sqrt(n))
    return PairedDifference(mean, mean - half, mean + half, n)
