"""Execute chapters as `make book` and nbval do, keeping their outputs.

    python tools/execute.py book/multitask/loss_weighting.ipynb [...]

Each notebook runs with its own folder as working directory (as under
nbval and Jupyter Book) and the environment of the calling shell (`make
execute` exports the kernels' environment). The executed copy goes to
`_build/executed/<part>/<slug>.ipynb`, every image output to
`_build/executed/<part>/<slug>-<cell>-<n>.png`, and one line per notebook
reports its run time and the number of images and error outputs.
Outputs are never written back into `book/`.

With `--store` (what `make full` runs) each chapter's kernel gets a
temporary results folder (`MTLBOOK_RESULTS_DIR`); after a run without
errors, what the chapter stored there (`mtlbook.results.store`) goes to
`book/results/`, with its provenance added: commit, whether the chapter
had uncommitted changes, the hash of its code cells, and the run time.
"""

import argparse
import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results"
sys.path.insert(0, str(ROOT))

from mtlbook import results  # noqa: E402


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def execute_and_store(path, timeout=600):
    """Executes one chapter with a results folder; files what it stored."""
    path = pathlib.Path(path).resolve()
    with tempfile.TemporaryDirectory() as folder:
        os.environ[results.DIRECTORY_VARIABLE] = folder
        try:
            start = time.perf_counter()
            ok = execute(path, timeout)
            seconds = time.perf_counter() - start
        finally:
            del os.environ[results.DIRECTORY_VARIABLE]
        record_path = pathlib.Path(folder) / f"{path.stem}.json"
        if not ok:
            return False
        if not record_path.is_file():
            print(f"{path.name}: ran, but stored no results "
                  "(it never called mtlbook.results.store)", file=sys.stderr)
            return False
        record = json.loads(record_path.read_text())
        record.update(
            commit=_git("rev-parse", "HEAD"),
            uncommitted_changes=bool(_git("status", "--porcelain", "--",
                                          str(path))),
            code_hash=results.code_hash(path),
            run_time_s=round(seconds, 1),
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        for old in RESULTS.glob(f"{path.stem}-*.png"):
            old.unlink()
        (RESULTS / record_path.name).write_text(
            json.dumps(record, indent=1) + "\n")
        for png in pathlib.Path(folder).glob(f"{path.stem}-*.png"):
            shutil.copy(png, RESULTS / png.name)
        print(f"stored {RESULTS.relative_to(ROOT)}/{record_path.name} "
              f"({len(record['figures'])} figures)")
        return True


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
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"{shown}: {seconds:.0f} s, {images} images, "
          f"{errors} error/stderr outputs"
          + ("" if failure is None else " -- FAILED"))
    if failure is not None:
        print(str(failure)[-3000:], file=sys.stderr)
    return failure is None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--store", action="store_true",
                        help="file the results each chapter stores in "
                        "book/results/ (make full)")
    args = parser.parse_args()
    run = execute_and_store if args.store else execute
    outcomes = [run(p, args.timeout) for p in args.notebooks]
    sys.exit(0 if all(outcomes) else 1)


if __name__ == "__main__":
    main()
