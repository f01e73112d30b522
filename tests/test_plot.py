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


# ------------------------------------------------------------ input checks
IMAGES = np.zeros((3, 4, 4))
WEIGHTS = np.ones((4, 2))
COSINES = np.linspace(-1.0, 1.0, 20)
CURVE = ([1, 2], [0.5, 0.6], [0.1, 0.1])


def test_image_grid_accepts_rgba_a_colour_map_object_and_numpy_ints():
    import matplotlib

    figure = plot.image_grid(np.zeros((2, 4, 4, 4)), columns=np.int64(2))
    assert len(figure.axes) == 2
    figure = plot.image_grid(IMAGES, cmap=matplotlib.colormaps["viridis"])
    assert figure.axes[0].images[0].get_cmap().name == "viridis"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"images": None}, TypeError, "`images`.*images=None"),
    ({"images": np.array([["a"]])}, TypeError, "`images`.*dtype"),
    ({"images": np.zeros((3, 4, 4, 2))}, ValueError,
     r"`images`.*shape=\(3, 4, 4, 2\)"),
    ({"labels": ["a"]}, ValueError, r"`labels`.*one entry per image \(3\)"),
    ({"labels": []}, ValueError, r"`labels`.*labels=\[\]"),
    ({"labels": "abc"}, TypeError, "`labels`.*labels='abc'"),
    ({"columns": 0}, ValueError, "`columns`.*columns=0"),
    ({"columns": -1}, ValueError, "`columns`.*columns=-1"),
    ({"columns": 1.5}, TypeError, "`columns`.*columns=1.5"),
    ({"columns": True}, TypeError, "`columns`.*columns=True"),
    ({"columns": "2"}, TypeError, "`columns`.*columns='2'"),
    ({"columns": None}, TypeError, "`columns`.*columns=None"),
    ({"cmap": "no_such_cmap"}, ValueError, "`cmap`.*cmap='no_such_cmap'"),
    ({"cmap": 1}, TypeError, "`cmap`.*cmap=1"),
])
def test_image_grid_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.image_grid(**{"images": IMAGES, **kwargs})


@pytest.mark.parametrize("value", ["False", 1, 0, None])
def test_flags_must_be_bools(value):
    with pytest.raises(TypeError, match=f"`log_x`.*log_x={value!r}"):
        plot.plot_curves_with_spread({"m": CURVE}, "x", "y", log_x=value)
    with pytest.raises(TypeError, match=f"`log_y`.*log_y={value!r}"):
        plot.plot_task_weights(WEIGHTS, ["a", "b"], log_y=value)


def test_flags_accept_numpy_bools():
    figure = plot.plot_curves_with_spread({"m": CURVE}, "x", "y",
                                          log_x=np.bool_(False))
    assert figure.axes[0].get_xscale() == "linear"


@pytest.mark.parametrize("axis", ["axis", 1, np.zeros(2)])
def test_axis_must_be_matplotlib_axes(axis):
    with pytest.raises(TypeError, match="`axis`.*Received: axis="):
        plot.plot_task_weights(WEIGHTS, ["a", "b"], axis=axis)
    with pytest.raises(TypeError, match="`axis`.*Received: axis="):
        plot.plot_seed_spread({"m": [0.5, 0.6]}, "y", axis=axis)


@pytest.mark.parametrize("curve, error, match", [
    (([1, 2], [float("nan"), 0.6], [0.1, 0.1]), ValueError,
     r"`curves\['m'\] mean`.*mean\[0\]=nan"),
    (([1, 2], [0.5, 0.6], [0.1, float("inf")]), ValueError,
     r"`curves\['m'\] std`.*std\[1\]=inf"),
    (([1, 2], [0.5, 0.6], [-0.1, 0.1]), ValueError,
     r"`curves` standard deviations must be >= 0.*std=-0.1"),
    (([0, 1], [0.5, 0.6], [0.1, 0.1]), ValueError,
     r"`curves` x values must be > 0 on a logarithmic.*x=0.0"),
    (([1, 2], "ab", [0.1, 0.1]), TypeError, r"`curves\['m'\] mean`.*'ab'"),
    (([1, 2], [True, False], [0.1, 0.1]), TypeError,
     r"`curves\['m'\] mean`.*dtype bool"),
    (([], [], []), ValueError, "non-zero lengths"),
    (0.5, TypeError, r"`curves` values.*curves\['m'\]=0.5"),
])
def test_plot_curves_with_spread_rejects_values_that_make_no_sense(
        curve, error, match):
    with pytest.raises(error, match=match):
        plot.plot_curves_with_spread({"m": curve}, "x", "y")


def test_plot_curves_with_spread_plots_x_zero_on_a_linear_axis():
    figure = plot.plot_curves_with_spread(
        {"m": ([0, 1], [0.5, 0.6], [0.0, 0.1])}, "x", "y", log_x=False)
    assert figure.axes[0].get_xscale() == "linear"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"weights": None}, TypeError, "`weights`.*weights=None"),
    ({"weights": np.full((4, 2), np.nan)}, ValueError,
     r"`weights`.*weights\[0\]=nan"),
    ({"weights": np.ones((0, 2))}, ValueError, r"`weights`.*\(0, 2\)"),
    ({"tasks": None}, TypeError, "`tasks`.*tasks=None"),
    ({"tasks": "ab"}, TypeError, "`tasks`.*tasks='ab'"),
    ({"steps_per_epoch": True}, ValueError,
     "`steps_per_epoch`.*steps_per_epoch=True"),
    ({"steps_per_epoch": 1.5}, ValueError,
     "`steps_per_epoch`.*steps_per_epoch=1.5"),
    ({"weights": np.array([[1.0, 0.0]]), "log_y": True}, ValueError,
     r"`weights` must be > 0 on a logarithmic axis.*weights.min\(\)=0.0"),
])
def test_plot_task_weights_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.plot_task_weights(**{"weights": WEIGHTS, "tasks": ["a", "b"],
                                  **kwargs})


def test_plot_task_weights_plots_zero_weights_on_a_linear_axis():
    figure = plot.plot_task_weights(np.array([[1.0, 0.0]]), ["a", "b"])
    assert figure.axes[0].get_yscale() == "linear"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"cosines": []}, ValueError, r"`cosines`.*cosines=\[\]"),
    ({"cosines": None}, TypeError, "`cosines`.*cosines=None"),
    ({"cosines": "0.5"}, TypeError, "`cosines`.*cosines='0.5'"),
    ({"cosines": np.ones((2, 2))}, ValueError,
     r"`cosines`.*array of shape \(2, 2\)"),
    ({"cosines": [float("nan"), 0.5]}, ValueError,
     r"`cosines`.*cosines\[0\]=nan"),
    ({"window": True}, TypeError, "`window`.*window=True"),
    ({"window": 0}, ValueError, "`window`.*window=0"),
    ({"bins": 0}, ValueError, "`bins`.*bins=0"),
    ({"bins": -1}, ValueError, "`bins`.*bins=-1"),
    ({"bins": True}, TypeError, "`bins`.*bins=True"),
    ({"bins": 1.5}, TypeError, "`bins`.*bins=1.5"),
    ({"bins": "30"}, TypeError, "`bins`.*bins='30'"),
    ({"bins": None}, TypeError, "`bins`.*bins=None"),
])
def test_plot_gradient_conflict_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.plot_gradient_conflict(**{"cosines": COSINES, **kwargs})


@pytest.mark.parametrize("kwargs, error, match", [
    ({"results": {"m": [float("nan"), 0.5]}}, ValueError,
     r"`results\['m'\]`.*results\['m'\]\[0\]=nan"),
    ({"results": {"m": "0.5"}}, TypeError,
     r"`results\['m'\]`.*results\['m'\]='0.5'"),
    ({"results": {"m": None}}, TypeError, r"`results\['m'\]`.*=None"),
    ({"reference": float("nan")}, ValueError, "`reference`.*reference=nan"),
    ({"reference": float("inf")}, ValueError, "`reference`.*reference=inf"),
    ({"reference": True}, TypeError, "`reference`.*reference=True"),
    ({"reference": "0.5"}, TypeError, "`reference`.*reference='0.5'"),
    ({"reference": 0.5, "reference_label": 1}, TypeError,
     "`reference_label`.*reference_label=1"),
])
def test_plot_seed_spread_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.plot_seed_spread(**{"results": {"m": [0.5, 0.6]}, "ylabel": "y",
                                 **kwargs})
