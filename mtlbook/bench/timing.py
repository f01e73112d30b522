"""Timing shared by the benchmarks: a step clock, shuffled repeats, ratios.

Noise on a shared machine comes in bursts of seconds, so the benchmarks
time every variant once per repeat, in a new random order each repeat,
and divide each variant's time by the baseline's time *in the same
repeat*: a burst then slows both, and the ratio keeps. The ratios over
repeats are summarised by their median and their spread, half the
interquartile range divided by the median (the middle half of the repeats
lies within about `median ± spread`).
"""

import time

import numpy as np


def check_int(name, value, low):
    """Checks that an argument is an int of at least `low`.

    Args:
        name: str. The argument's name, for the error message.
        value: the value received.
        low: int. Smallest allowed value.

    Returns:
        `value` as a Python int.

    Example:

    ```python
    steps = check_int("steps", steps, 2)
    ```
    """
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or value < low):
        raise ValueError(
            f"`{name}` must be an int >= {low}. Received: {name}={value!r}"
        )
    return int(value)


def step_clock():
    """A Keras callback that measures seconds per training step.

    It times from the end of the first step to the end of the last, which
    leaves out `fit`'s fixed cost per call (building the iterator, the
    first step's tracing), a cost that would dominate short epochs.

    Returns:
        A `keras.callbacks.Callback` with a method `seconds_per_step()`,
        valid after a `fit` of at least two steps.

    Example:

    ```python
    clock = step_clock()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[clock])
    clock.seconds_per_step()
    ```
    """
    import keras

    class StepClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

        def seconds_per_step(self):
            if len(self.ends) < 2:
                raise RuntimeError(
                    "The step clock needs an epoch of at least 2 steps. "
                    f"Received: {len(self.ends)} step(s)"
                )
            return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)

    return StepClock()


def interleave(variants, repeats, seed=0):
    """Times every variant once per repeat, in a shuffled order.

    Args:
        variants: dict `{name: function}`; each call of a function runs
            the variant once and returns its time (e.g. seconds per step).
        repeats: int >= 1.
        seed: int. Seed of the order of each repeat.

    Returns:
        dict `{name: list of repeats times}`, in the order of the repeats.

    Example:

    ```python
    times = interleave({"a": run_a, "b": run_b}, repeats=5)
    ```
    """
    repeats = check_int("repeats", repeats, 1)
    rng = np.random.default_rng(seed)
    names = list(variants)
    times = {name: [] for name in names}
    for _ in range(repeats):
        for index in rng.permutation(len(names)):
            name = names[index]
            times[name].append(float(variants[name]()))
    return times


def summarize(times, baseline):
    """Median and spread of per-repeat ratios to a baseline.

    Args:
        times: sequence of times, one per repeat.
        baseline: sequence of the baseline's times in the same repeats.

    Returns:
        dict with `"ratio"` (median of `times / baseline`), `"spread"`
        (half the interquartile range of the ratios, divided by their
        median), `"low"` and `"high"` (smallest and largest ratio).

    Example:

    ```python
    summarize([1.1, 1.2, 1.0], [1.0, 1.1, 1.0])["ratio"]  # 1.0909...
    ```
    """
    times, baseline = np.asarray(times, float), np.asarray(baseline, float)
    if times.shape != baseline.shape or times.ndim != 1 or not len(times):
        raise ValueError(
            "`times` and `baseline` must be non-empty sequences of the same "
            f"length. Received: {times.shape} and {baseline.shape}"
        )
    ratios = times / baseline
    median = float(np.median(ratios))
    low, high = np.percentile(ratios, [25, 75])
    return {"ratio": median, "spread": float((high - low) / 2 / median),
            "low": float(ratios.min()), "high": float(ratios.max())}


def format_ratio(summary):
    """Formats a `summarize` result as `"1.02 ±1.1 %"`.

    Args:
        summary: dict with `"ratio"` and `"spread"`.

    Returns:
        str.

    Example:

    ```python
    format_ratio({"ratio": 1.02, "spread": 0.011})  # '1.02 ±1.1 %'
    ```
    """
    return f"{summary['ratio']:.2f} ±{100 * summary['spread']:.1f} %"


def print_columns(rows, out):
    """Prints rows of strings as left-aligned columns.

    Args:
        rows: list of lists of str, all of the same length.
        out: a text stream.

    Example:

    ```python
    print_columns([["name", "ratio"], ["xla", "0.91"]], sys.stdout)
    ```
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(),
              file=out)
