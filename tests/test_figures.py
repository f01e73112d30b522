"""Figures reach the rendered page.

The book's pages show what the kernels display. A kernel started with
`MPLBACKEND=Agg` (as a Makefile or a conftest once exported) displays no
figure at all, silently, so every chapter rendered without images. This test
runs a small plotting notebook in a kernel started from this process's
environment — the one that `make test` gives nbval and `make book` gives
Jupyter Book — and requires an image from each drawing cell.
"""

import os

import nbformat
import pytest
from nbclient import NotebookClient

CELLS = {
    "pyplot": "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])",
    "mtlbook.plot": (
        "from mtlbook.plot import plot_history\n"
        "figure = plot_history({'a_loss': [2.0, 1.0], 'b_loss': [1.0, 0.5]},"
        " ['a', 'b'])"
    ),
    "figure, end of cell": (
        "from mtlbook.plot import image_grid\nimport numpy as np\n"
        "image_grid(np.zeros((2, 8, 8)));"
    ),
}


def test_the_environment_does_not_force_a_non_interactive_backend():
    assert os.environ.get("MPLBACKEND", "").lower() not in ("agg", "pdf",
                                                            "svg")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(s) for s in CELLS.values()]
    notebook.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python"
    }
    folder = tmp_path_factory.mktemp("figures")
    NotebookClient(
        notebook, timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    ).execute()
    return dict(zip(CELLS, notebook.cells))


@pytest.mark.parametrize("name", list(CELLS))
def test_a_drawing_cell_displays_an_image(executed, name):
    images = [
        o for o in executed[name].outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 1, (name, executed[name].outputs)
