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
    figure = plot.image_grid(np.zeros((5, 8, 8, 1)), labels=list("abcde"), columns=4)
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
            imports = re.findall(r"^\s*(?:import|from)\s+matplotlib", path.read_text(), re.M)
            assert not imports, path
