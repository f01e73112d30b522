"""Execute chapters as `make book` and nbval do, keeping their outputs.

    python tools/execute.py book/multitask/loss_weighting.ipynb [...]

Each notebook runs with its own folder as working directory (as under
nbval and Jupyter Book) and the environment of the calling shell (`make
execute` exports the kernels' environment). The executed copy goes to
`_build/executed/<part>/<slug>.ipynb`, every image output to
`_build/executed/<part>/<slug>-<cell>-<n>.png`, and one line per notebook
reports its run time and the number of images and error outputs.
Outputs are never written back into `book/`.
"""

import argparse
import base64
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def execute(path, timeout=600):
    path = pathlib.Path(path).resolve()
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except CellExecutionError as error:
        failure = error
    seconds = time.perf_counter() - start
    out_dir = ROOT / "_build" / "executed" / path.parent.name
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out_dir / path.name)
    images = errors = 0
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" or (
                output.get("name") == "stderr"
            ):
                errors += 1
            png = output.get("data", {}).get("image/png")
            if png:
                images += 1
                name = f"{path.stem}-{index:02d}-{images}.png"
                (out_dir / name).write_bytes(base64.b64decode(png))
    print(f"{path.relative_to(ROOT)}: {seconds:.0f} s, {images} images, "
          f"{errors} error/stderr outputs"
          + ("" if failure is None else " -- FAILED"))
    if failure is not None:
        print(str(failure)[-3000:], file=sys.stderr)
    return failure is None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args()
    results = [execute(p, args.timeout) for p in args.notebooks]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
