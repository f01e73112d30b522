"""Tests of mtlbook.plot and of the import-time promise about matplotlib."""

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from mtlbook import plot

HISTORY = {
    "loss": [2.0, 1.0],
    "digit_loss": [1.5, 0.7], "val_digit_loss": [1.6, 0.8],
    "parity_loss": [0.5, 0.3],
}


def test_plot_history_has_one_panel_per_task():
    figure = plot.plot_history(HISTORY, ["digit", "parity"])
    assert len(figure.axes) == 2
    assert len(figure.axes[0].lines) == 2  # train + validation
    assert len(figure.axes[1].lines) == 1  # no validation logged


def test_plot_history_rejects_bad_input():
    with pytest.raises(ValueError, match="digit_accuracy"):
        plot.plot_history(HISTORY, ["digit"], metric="accuracy")
    with pytest.raises(ValueError, match="tasks"):
        plot.plot_history(HISTORY, "digit")
    with pytest.raises(TypeError, match="history"):
        plot.plot_history([1, 2], ["digit"])


def test_image_grid():
    figure = plot.image_grid(
        np.zeros((5, 8, 8, 1)), labels=list("abcde"), columns=4
    )
    assert len(figure.axes) == 8
    with pytest.raises(ValueError, match="images"):
        plot.image_grid(np.zeros((0, 8, 8)))


def test_importing_mtlbook_does_not_import_matplotlib():
    code = "import sys, mtlbook; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_plot_module_imports_matplotlib():
    # Keras itself may import matplotlib; our own modules must not.
    package = pathlib.Path(plot.__file__).parent
    for path in package.rglob("*.py"):
        if path.name != "plot.py":
            imports = re.findall(
                r"^\s*(?:import|from)\s+matplotlib", path.read_text(), re.M
            )
            assert not imports, path


def test_plot_history_is_at_most_ten_inches_wide():
    logs = {f"t{i}_loss": [1.0, 0.5] for i in range(5)}
    figure = plot.plot_history(logs, [f"t{i}" for i in range(5)])
    assert figure.get_size_inches()[0] <= 10


def test_plot_task_weights_labels_log_axis_and_epochs():
    weights = np.array([[1.0, 1.0], [1.5, 0.01], [2.0, 0.001]])
    figure = plot.plot_task_weights(
        weights, ["a", "b"], log_y=True, steps_per_epoch=1
    )
    axis = figure.axes[0]
    assert axis.get_xlabel() == "training step"
    assert axis.get_ylabel() == "task weight"
    assert axis.get_yscale() == "log"
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert labels == ["a", "b"]
    assert len(axis.lines) == 2 + 2  # two tasks, epoch lines at steps 1, 2
    assert plot.plot_task_weights(weights, ["a", "b"]).axes[0].get_yscale() \
        == "linear"
    with pytest.raises(ValueError, match="steps_per_epoch"):
        plot.plot_task_weights(weights, ["a", "b"], steps_per_epoch=0)
    with pytest.raises(ValueError, match="weights"):
        plot.plot_task_weights(weights, ["a"])


def test_plot_gradient_conflict_marks_zero_and_labels_axes():
    cosines = np.linspace(-0.5, 1.0, 40)
    figure = plot.plot_gradient_conflict(cosines, window=5, bins=10)
    left, right = figure.axes
    assert left.get_xlabel() == "cosine between task gradients"
    assert left.get_ylabel() == "number of steps"
    assert len(left.patches) >= 10  # bins (plus the shaded conflict region)
    assert right.get_xlabel() == "training step"
    zero_lines = [line for line in right.lines
                  if np.allclose(line.get_ydata(), 0.0)]
    assert zero_lines
    with pytest.raises(ValueError, match="window"):
        plot.plot_gradient_conflict(cosines, window=0)
    with pytest.raises(ValueError, match="cosines"):
        plot.plot_gradient_conflict([])


def test_plot_seed_spread_draws_error_bars_and_seeds():
    results = {"equal": [0.8, 0.82, 0.81], "PCGrad": [0.79, 0.83, 0.8]}
    figure = plot.plot_seed_spread(results, "test accuracy", reference=0.1)
    axis = figure.axes[0]
    assert axis.get_ylabel() == "test accuracy"
    assert [t.get_text() for t in axis.get_xticklabels()] == list(results)
    assert len(axis.containers) == 2  # one error bar per method
    assert figure.get_size_inches()[0] <= 10
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert "reference (0.1)" in legend
    figure = plot.plot_seed_spread(results, "accuracy", reference=1 / 3,
                                   reference_label="chance")
    legend = figure.axes[0].get_legend()
    assert "chance" in [text.get_text() for text in legend.get_texts()]
    with pytest.raises(ValueError, match="results"):
        plot.plot_seed_spread({}, "accuracy")
    with pytest.raises(ValueError, match="results"):
        plot.plot_seed_spread({"a": []}, "accuracy")
