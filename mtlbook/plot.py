"""Figures for the book. Every function returns a `matplotlib.figure.Figure`.

This is the only mtlbook module that imports matplotlib.
"""

import matplotlib.pyplot as plt
import numpy as np


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
            f"`tasks` must be a non-empty sequence of names. Received: tasks={tasks!r}"
        )
    figure, axes = plt.subplots(
        1, len(tasks), figsize=(4 * len(tasks), 3), squeeze=False
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
        images: array `(n, h, w)` or `(n, h, w, c)` with c in {1, 3}.
        labels: optional sequence of n titles.
        columns: int. Images per row.
        cmap: colour map for grey images.

    Returns:
        A matplotlib Figure.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(
            "`images` must be a non-empty array (n, h, w[, c]). "
            f"Received: images.shape={images.shape}"
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
            length (e.g. labelled examples per class, mean accuracy over
            seeds, its standard deviation).
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
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for name, values in curves.items():
        if len(values) != 3 or not len(values[0]) == len(values[1]) == len(
            values[2]
        ):
            raise ValueError(
                "`curves` values must be (x, mean, std) of equal lengths. "
                f"Received: curves[{name!r}] with {len(values)} parts"
            )
        x, mean, std = (np.asarray(v, dtype="float64") for v in values)
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


def plot_task_weights(weights, tasks, title=None, axis=None):
    """Plots each task's loss weight over training steps.

    Args:
        weights: array `(steps, T)`, e.g. `np.array(TaskWeightHistory().weights)`.
        tasks: sequence of the `T` task names.
        title: optional axis title.
        axis: optional matplotlib Axes to draw on.

    Returns:
        A matplotlib Figure.
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != len(tasks):
        raise ValueError(
            "`weights` must have shape (steps, len(tasks)). "
            f"Received: weights.shape={weights.shape}, tasks={list(tasks)}"
        )
    if axis is None:
        figure, axis = plt.subplots(figsize=(5, 3))
    else:
        figure = axis.figure
    for index, task in enumerate(tasks):
        axis.plot(weights[:, index], label=task)
    axis.set(xlabel="training step", ylabel="task weight", title=title)
    axis.legend()
    figure.tight_layout()
    return figure


def plot_gradient_conflict(cosines, window=10, title=None):
    """Histogram and time course of per-step gradient cosine similarities.

    Args:
        cosines: sequence of per-step mean pairwise cosines (e.g.
            `GradientConflictHistory().cosines`).
        window: int. Width of the moving average drawn over time.
        title: optional figure title.

    Returns:
        A matplotlib Figure with two panels.
    """
    cosines = np.asarray(cosines, dtype="float64")
    if cosines.ndim != 1 or len(cosines) == 0:
        raise ValueError(
            "`cosines` must be a non-empty 1-D sequence. "
            f"Received: shape={cosines.shape}"
        )
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    left.hist(cosines, bins=30)
    left.axvline(0.0, color="black", linewidth=1)
    left.set(xlabel="cosine between task gradients", ylabel="steps")
    right.plot(cosines, alpha=0.4, label="per step")
    if len(cosines) >= window:
        smooth = np.convolve(cosines, np.ones(window) / window, mode="valid")
        right.plot(np.arange(window - 1, len(cosines)), smooth,
                   label=f"moving average ({window})")
    right.axhline(0.0, color="black", linewidth=1)
    right.set(xlabel="training step", ylabel="cosine")
    right.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
