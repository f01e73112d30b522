"""Figures for the book. Every function returns a `matplotlib.figure.Figure`.

This is the only mtlbook module that imports matplotlib.
"""

import math
import numbers

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap


def _shown(value):
    """A short text of `value` for an error message."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 80 else f"a {type(value).__name__}"


def _check_bool(argument, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"`{argument}` must be a bool. Received: {argument}={value!r}"
        )


def _check_positive_int(argument, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Integral
    ):
        raise TypeError(
            f"`{argument}` must be a positive int. "
            f"Received: {argument}={_shown(value)}"
        )
    if value < 1:
        raise ValueError(
            f"`{argument}` must be a positive int. "
            f"Received: {argument}={value!r}"
        )


def _check_axis(axis):
    if axis is not None and not isinstance(axis, Axes):
        raise TypeError(
            "`axis` must be a matplotlib Axes or None. "
            f"Received: axis={_shown(axis)}"
        )


def _numbers(argument, values):
    """`values` as a float64 array of finite numbers.

    Raises a TypeError naming `argument` when `values` are not numbers
    (strings, None, bools, objects) and a ValueError at the first NaN or
    infinite entry.
    """
    array = None
    if not isinstance(values, (str, bytes)) and values is not None:
        array = np.asarray(values)
    if array is None or array.dtype.kind not in "iuf":
        kind = "" if array is None else f" (dtype {array.dtype})"
        raise TypeError(
            f"`{argument}` must be numbers. "
            f"Received: {argument}={_shown(values)}{kind}"
        )
    array = array.astype("float64")
    bad = np.flatnonzero(~np.isfinite(array.ravel()))
    if len(bad):
        raise ValueError(
            f"`{argument}` must be finite numbers. Received: "
            f"{argument}[{bad[0]}]={float(array.ravel()[bad[0]])!r}"
        )
    return array


def _history_dict(history):
    """Accepts a Keras `History` or its `.history` dict."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise TypeError(
            "`history` must be a keras.callbacks.History or a non-empty dict "
            f"of per-epoch lists. Received: history={type(history).__name__}"
        )
    return logs


def plot_history(history, tasks, metric="loss", title=None):
    """Plots a metric per task, training and validation, one panel per task.

    Keras names per-output logs `"<task>_<metric>"` (training) and
    `"val_<task>_<metric>"` (validation); a task without such a key raises.

    Args:
        history: `keras.callbacks.History` returned by `fit`, or its
            `history` dict.
        tasks: sequence of task (output) names.
        metric: str. Metric suffix, e.g. `"loss"` or `"accuracy"`.
        title: optional figure title.

    Returns:
        A matplotlib Figure.

    Example:

    ```python
    history = model.fit(..., validation_data=...)
    plot_history(history, ["digit", "parity"], metric="accuracy")
    ```
    """
    logs = _history_dict(history)
    if isinstance(tasks, str) or not tasks:
        raise ValueError(
            "`tasks` must be a non-empty sequence of names. "
            f"Received: tasks={tasks!r}"
        )
    # At most 10 inches wide: the book's page is about 800 pixels wide.
    figure, axes = plt.subplots(
        1, len(tasks), figsize=(min(4 * len(tasks), 10), 3), squeeze=False
    )
    for axis, task in zip(axes[0], tasks):
        key = f"{task}_{metric}"
        if key not in logs:
            raise ValueError(
                f"`tasks` must name outputs logged with `{metric}`. "
                f"Received: task={task!r}, but {key!r} is not among the "
                f"logged keys {sorted(logs)}"
            )
        epochs = np.arange(1, len(logs[key]) + 1)
        axis.plot(epochs, logs[key], label="train")
        if f"val_{key}" in logs:
            axis.plot(epochs, logs[f"val_{key}"], label="validation")
        axis.set(title=task, xlabel="epoch", ylabel=metric)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def image_grid(images, labels=None, columns=8, cmap="gray"):
    """Shows images in a grid, optionally titled with their labels.

    Args:
        images: array `(n, h, w)` or `(n, h, w, c)` with c in {1, 3, 4}
            (grey, RGB, RGBA).
        labels: optional sequence of n titles, one per image.
        columns: int. Images per row.
        cmap: colour map for grey images: a Matplotlib colour map or its
            name, or None for Matplotlib's default.

    Returns:
        A matplotlib Figure.

    Example:

    ```python
    image_grid(x_train[:8], labels=[str(d) for d in y_train[:8]], columns=4)
    ```
    """
    if images is None or isinstance(images, (str, bytes)):
        raise TypeError(
            "`images` must be an array (n, h, w[, c]). "
            f"Received: images={images!r}"
        )
    images = np.asarray(images)
    if images.dtype.kind not in "biuf":
        raise TypeError(
            "`images` must be an array of numbers (n, h, w[, c]). "
            f"Received: images of dtype {images.dtype}"
        )
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if (images.ndim not in (3, 4) or len(images) == 0
            or images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise ValueError(
            "`images` must be a non-empty array (n, h, w) or (n, h, w, c) "
            f"with c in {{1, 3, 4}}. Received: images.shape={images.shape}"
        )
    if labels is not None:
        if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
            raise TypeError(
                "`labels` must be a sequence of titles, one per image, or "
                f"None. Received: labels={_shown(labels)}"
            )
        if len(labels) != len(images):
            raise ValueError(
                f"`labels` must have one entry per image ({len(images)}). "
                f"Received: {len(labels)} labels, labels={_shown(labels)}"
            )
    _check_positive_int("columns", columns)
    if isinstance(cmap, str):
        if cmap not in matplotlib.colormaps:
            raise ValueError(
                "`cmap` must name a Matplotlib colour map (e.g. 'gray', "
                f"'viridis'). Received: cmap={cmap!r}"
            )
    elif cmap is not None and not isinstance(cmap, Colormap):
        raise TypeError(
            "`cmap` must be a Matplotlib colour map, its name or None. "
            f"Received: cmap={_shown(cmap)}"
        )
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.3 * columns, 1.5 * rows), squeeze=False
    )
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            axis.imshow(images[index], cmap=cmap if images.ndim == 3 else None)
            if labels is not None:
                axis.set_title(str(labels[index]), fontsize=8)
    figure.tight_layout()
    return figure


def plot_curves_with_spread(curves, xlabel, ylabel, title=None, log_x=True):
    """Plots mean curves with a +-1 standard deviation band, one per method.

    Args:
        curves: dict `{name: (x, mean, std)}`; each a sequence of equal
            length of finite numbers (e.g. labelled examples per class,
            mean accuracy over seeds, its standard deviation, >= 0). With
            `log_x`, every x must be > 0.
        xlabel: str. Label of the x axis.
        ylabel: str. Label of the y axis.
        title: optional axes title.
        log_x: bool. Logarithmic x axis.

    Returns:
        A matplotlib Figure.

    Example:

    ```python
    plot_curves_with_spread({"scratch": ([1, 5, 20], [0.3, 0.5, 0.8],
                                         [0.05, 0.1, 0.05])},
                            "labels per class", "test accuracy")
    ```
    """
    if not isinstance(curves, dict) or not curves:
        raise ValueError(
            "`curves` must be a non-empty dict {name: (x, mean, std)}. "
            f"Received: curves={type(curves).__name__}"
        )
    _check_bool("log_x", log_x)
    checked = {}
    for name, values in curves.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(
                "`curves` values must be (x, mean, std). "
                f"Received: curves[{name!r}]={_shown(values)}"
            )
        if len(values) != 3:
            raise ValueError(
                "`curves` values must be (x, mean, std) of equal lengths. "
                f"Received: curves[{name!r}] with {len(values)} parts"
            )
        x, mean, std = (
            _numbers(f"curves[{name!r}] {part}", value).ravel()
            for part, value in zip(("x", "mean", "std"), values)
        )
        if not len(x) == len(mean) == len(std) or len(x) == 0:
            raise ValueError(
                "`curves` values must be (x, mean, std) of equal, non-zero "
                f"lengths. Received: curves[{name!r}] with lengths "
                f"{len(x)}, {len(mean)}, {len(std)}"
            )
        if (std < 0).any():
            raise ValueError(
                "`curves` standard deviations must be >= 0. Received: "
                f"curves[{name!r}] std={float(std.min())!r}"
            )
        if log_x and (x <= 0).any():
            raise ValueError(
                "`curves` x values must be > 0 on a logarithmic x axis; pass "
                f"log_x=False to plot them. Received: curves[{name!r}] "
                f"x={float(x.min())!r}"
            )
        checked[name] = x, mean, std
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for name, (x, mean, std) in checked.items():
        axis.plot(x, mean, marker="o", label=name)
        axis.fill_between(x, mean - std, mean + std, alpha=0.2)
    if log_x:
        axis.set_xscale("log")
    axis.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure


def plot_task_weights(weights, tasks, title=None, axis=None, log_y=False,
                      steps_per_epoch=None):
    """Plots each task's loss weight over training steps.

    Args:
        weights: array `(steps, T)` of finite numbers, e.g.
            `np.array(TaskWeightHistory().weights)`; > 0 with `log_y`.
        tasks: sequence of the `T` task names.
        title: optional axis title.
        axis: optional matplotlib Axes to draw on.
        log_y: bool. Logarithmic weight axis, for weights that differ by
            orders of magnitude (e.g. inverse-loss weights).
        steps_per_epoch: optional int. Draws a dotted vertical line at
            every epoch boundary.

    Returns:
        A matplotlib Figure.

    Example:

    ```python
    recorder = TaskWeightHistory()
    model.fit(..., callbacks=[recorder])
    plot_task_weights(recorder.weights, ["shape", "x"], log_y=True)
    ```
    """
    values = _numbers("weights", weights)
    weights = np.asarray(weights)
    if isinstance(tasks, (str, bytes)) or not hasattr(tasks, "__len__"):
        raise TypeError(
            "`tasks` must be a sequence of task names. "
            f"Received: tasks={_shown(tasks)}"
        )
    if (weights.ndim != 2 or weights.shape[1] != len(tasks)
            or len(weights) == 0):
        raise ValueError(
            "`weights` must have shape (steps, len(tasks)) with steps >= 1. "
            f"Received: weights.shape={weights.shape}, tasks={list(tasks)}"
        )
    if steps_per_epoch is not None and (
        isinstance(steps_per_epoch, (bool, np.bool_))
        or not isinstance(steps_per_epoch, numbers.Integral)
        or steps_per_epoch < 1
    ):
        raise ValueError(
            "`steps_per_epoch` must be a positive int or None. "
            f"Received: steps_per_epoch={steps_per_epoch!r}"
        )
    _check_bool("log_y", log_y)
    if log_y and (values <= 0).any():
        raise ValueError(
            "`weights` must be > 0 on a logarithmic axis; pass log_y=False "
            f"to plot them. Received: weights.min()={float(values.min())!r}"
        )
    _check_axis(axis)
    if axis is None:
        figure, axis = plt.subplots(figsize=(5, 3))
    else:
        figure = axis.figure
    if steps_per_epoch:
        for step in range(steps_per_epoch, len(weights), steps_per_epoch):
            axis.axvline(step, color="0.8", linestyle=":", linewidth=1)
    for index, task in enumerate(tasks):
        axis.plot(weights[:, index], label=task)
    if log_y:
        axis.set_yscale("log")
    axis.set(xlabel="training step", ylabel="task weight", title=title)
    axis.legend(title="task", fontsize="small")
    figure.tight_layout()
    return figure


def plot_gradient_conflict(cosines, window=10, title=None, bins=30):
    """Histogram and time course of per-step gradient cosine similarities.

    Both panels mark the cosine 0 with a black line: below it the task
    gradients conflict (a step that helps one task hurts the other to first
    order); the histogram shades that region.

    Args:
        cosines: non-empty sequence of finite per-step mean pairwise
            cosines (e.g. `GradientConflictHistory().cosines`).
        window: int. Width of the moving average drawn over time.
        title: optional figure title.
        bins: int. Number of histogram bins.

    Returns:
        A matplotlib Figure with two panels.

    Example:

    ```python
    conflict = GradientConflictHistory()
    model.fit(..., callbacks=[conflict])
    plot_gradient_conflict(conflict.cosines, title="equal weighting")
    ```
    """
    given = cosines
    cosines = _numbers("cosines", cosines)
    if cosines.ndim != 1 or len(cosines) == 0:
        raise ValueError(
            "`cosines` must be a non-empty 1-D sequence. "
            f"Received: cosines={_shown(given)}"
            + ("" if isinstance(given, np.ndarray)
               else f" of shape {cosines.shape}")
        )
    _check_positive_int("window", window)
    _check_positive_int("bins", bins)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.hist(cosines, bins=bins, color="tab:blue")
    low = min(cosines.min(), 0.0)
    left.axvspan(low, 0.0, color="tab:red", alpha=0.1,
                 label=f"conflict: {(cosines < 0).mean():.0%} of steps")
    left.axvline(0.0, color="black", linewidth=1)
    left.set(xlabel="cosine between task gradients", ylabel="number of steps")
    left.legend(fontsize="small")
    right.plot(cosines, alpha=0.4, label="per step")
    if len(cosines) >= window:
        smooth = np.convolve(cosines, np.ones(window) / window, mode="valid")
        right.plot(np.arange(window - 1, len(cosines)), smooth,
                   label=f"moving average ({window} steps)")
    right.axhline(0.0, color="black", linewidth=1, label="no alignment (0)")
    right.set(xlabel="training step", ylabel="cosine between task gradients")
    right.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_seed_spread(results, ylabel, title=None, axis=None, reference=None,
                     reference_label=None):
    """Compares methods by the mean over seeds, with error bars and seeds.

    Draws, for each method, its mean as a point with a ±1 standard deviation
    error bar, and every seed's value as a small dot next to it, so that a
    reader sees at once whether two methods differ by more than the seeds do.

    Args:
        results: dict `{name: sequence of per-seed values}`, finite
            numbers, e.g. test accuracies of three seeds per method.
        ylabel: str. Label of the value axis, with units where there are
            units.
        title: optional axis title.
        axis: optional matplotlib Axes to draw on.
        reference: optional finite float. Draws a dashed horizontal line
            there (e.g. chance accuracy).
        reference_label: optional str. Legend entry of that line; by
            default `"reference (<value>)"`.

    Returns:
        A matplotlib Figure.

    Example:

    ```python
    plot_seed_spread({"equal": [0.81, 0.83, 0.80],
                      "PCGrad": [0.82, 0.80, 0.81]}, "test accuracy")
    ```
    """
    if not isinstance(results, dict) or not results:
        raise ValueError(
            "`results` must be a non-empty dict {name: per-seed values}. "
            f"Received: results={type(results).__name__}"
        )
    checked = {}
    for name, values in results.items():
        values = _numbers(f"results[{name!r}]", values).ravel()
        if len(values) == 0:
            raise ValueError(
                "`results` values must be non-empty sequences. "
                f"Received: results[{name!r}] with 0 values"
            )
        checked[name] = values
    if reference is not None:
        if isinstance(reference, (bool, np.bool_)) or not isinstance(
            reference, numbers.Real
        ):
            raise TypeError(
                "`reference` must be a finite float or None. "
                f"Received: reference={_shown(reference)}"
            )
        if not math.isfinite(reference):
            raise ValueError(
                "`reference` must be a finite float or None. "
                f"Received: reference={reference!r}"
            )
    if reference_label is not None and not isinstance(reference_label, str):
        raise TypeError(
            "`reference_label` must be a str or None. "
            f"Received: reference_label={_shown(reference_label)}"
        )
    _check_axis(axis)
    if axis is None:
        figure, axis = plt.subplots(figsize=(1.2 * len(results) + 2, 3))
    else:
        figure = axis.figure
    for position, (name, values) in enumerate(checked.items()):
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        axis.errorbar(position, values.mean(), yerr=std, fmt="o",
                      color="tab:blue", capsize=4,
                      label="mean ± 1 std" if position == 0 else None)
        axis.plot(np.full(len(values), position + 0.15), values, ".",
                  color="0.5", label="one seed" if position == 0 else None)
    if reference is not None:
        label = reference_label or f"reference ({reference:.3g})"
        axis.axhline(reference, color="black", linestyle="--", linewidth=1,
                     label=label)
    axis.set_xticks(range(len(results)), list(results))
    axis.set_xlim(-0.5, len(results) - 0.5)
    axis.set(ylabel=ylabel, title=title)
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure
