"""Stored results of a chapter's full-size run, with their provenance.

A chapter's `full` run (`make full CHAPTER=<name>`) calls `store` at its
end with its key tables, numbers and figures; `tools/execute.py --store`
then adds the provenance (commit, run time, a hash of the chapter's code
cells) and files them under `book/results/`. The chapter's default `small`
run calls `show` to put the stored full-size numbers next to its own live
ones. A test compares each stored hash with its chapter, so stale numbers
cannot stay in the book.
"""

import base64
import datetime
import hashlib
import html
import json
import os
import pathlib
import platform
import re

DIRECTORY_VARIABLE = "MTLBOOK_RESULTS_DIR"
# Code cells with this tag (the cells that show stored results) do not
# count towards a chapter's code hash: they do not change what a run computes.
SHOW_TAG = "stored-results"
_NAME = re.compile(r"^[a-z0-9_]+$")


def _check_name(argument, name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"`{argument}` must be a lower-case name of letters, digits and "
            f"underscores. Received: {argument}={name!r}"
        )


def _shown(value):
    """A short text of `value` for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else f"a {type(value).__name__}"


def _check_path(argument, value, expected):
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"`{argument}` must be {expected}. "
            f"Received: {argument}={_shown(value)}"
        )


def _environment():
    import sys

    versions = {"python": platform.python_version()}
    for module in ("keras", "tensorflow", "numpy", "jax", "torch"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "")
    hardware = {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    if "tensorflow" in sys.modules:
        devices = sys.modules["tensorflow"].config.list_physical_devices("GPU")
        hardware["gpus"] = [d.name for d in devices]
    return {"versions": versions, "hardware": hardware}


def _label_to_json(label):
    if isinstance(label, tuple):  # a MultiIndex entry
        return [_label_to_json(part) for part in label]
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        return label
    return str(label)


def _labels_from_json(labels):
    import ast

    import pandas as pd

    parsed = []
    for label in labels:
        if isinstance(label, str) and label.startswith("("):
            try:  # a MultiIndex entry stored as its repr by an older store
                label = ast.literal_eval(label)
            except (ValueError, SyntaxError):
                pass
        parsed.append(tuple(label) if isinstance(label, (list, tuple))
                      else label)
    if parsed and all(isinstance(label, tuple) for label in parsed):
        return pd.MultiIndex.from_tuples(parsed)
    return pd.Index(parsed)


def _table_to_json(table):
    return {
        "columns": [_label_to_json(c) for c in table.columns],
        "index": [_label_to_json(i) for i in table.index],
        "index_name": table.index.name,
        "data": table.astype(object).where(table.notna(), None).values.tolist(),
    }


def store(chapter, tables=None, numbers=None, figures=None, directory=None):
    """Writes a chapter's results for `tools/execute.py --store` to file.

    Does nothing (returns `None`) unless a results folder is given, by
    `directory` or the environment variable `MTLBOOK_RESULTS_DIR`: a
    reader's own full run never writes into the book.

    Args:
        chapter: str. The chapter's file name without `.ipynb`.
        tables: mapping name -> `pandas.DataFrame`, or None.
        numbers: mapping name -> JSON-serializable value, or None.
        figures: mapping name -> `matplotlib.figure.Figure`, or None; saved
            as `<chapter>-<name>.png` next to the JSON file.
        directory: str, path or None. The results folder.

    Returns:
        The path of the JSON file written, or None.
    """
    _check_name("chapter", chapter)
    if directory is not None:
        _check_path("directory", directory, "a str, a path or None")
    directory = directory or os.environ.get(DIRECTORY_VARIABLE)
    if not directory:
        return None
    tables, numbers, figures = tables or {}, numbers or {}, figures or {}
    for argument, value in (("tables", tables), ("numbers", numbers),
                            ("figures", figures)):
        if not hasattr(value, "items"):
            raise TypeError(
                f"`{argument}` must be a mapping name -> value. Received: "
                f"{argument}={value!r}"
            )
        for name in value:
            _check_name(f"{argument} key", name)
    for name, table in tables.items():
        if not hasattr(table, "columns"):
            raise TypeError(
                f"`tables[{name!r}]` must be a pandas DataFrame. Received: "
                f"{type(table).__name__}"
            )
    for name, figure in figures.items():
        if not callable(getattr(figure, "savefig", None)):
            raise TypeError(
                f"`figures[{name!r}]` must be a matplotlib Figure. "
                f"Received: figures[{name!r}]={_shown(figure)}"
            )
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(directory / f"{chapter}-{name}.png", dpi=100,
                       bbox_inches="tight")
    record = {
        "chapter": chapter,
        "size": os.environ.get("MTLBOOK_SIZE", "small") or "small",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        **_environment(),
        "tables": {n: _table_to_json(t) for n, t in tables.items()},
        "numbers": dict(numbers),
        "figures": sorted(figures),
    }
    path = directory / f"{chapter}.json"
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return path


_PIN = re.compile(r"mtlbook==[0-9][0-9A-Za-z.+-]*")


def code_hash(notebook):
    """SHA-256 of a notebook's code cells (except those tagged to show
    stored results), the key that ties stored results to their code.

    The version pinned in the Colab install cell (`mtlbook==X`) is left
    out: the cell installs nothing outside Colab, so a release bump does
    not change what a stored run computed.

    Args:
        notebook: str or path of an `.ipynb` file.

    Returns:
        The hexadecimal digest, a str of 64 characters.

    Example:

    ```python
    code_hash("book/multitask/loss_weighting.ipynb")
    ```
    """
    _check_path("notebook", notebook, "a str or path of an .ipynb file")
    cells = json.loads(pathlib.Path(notebook).read_text())["cells"]
    digest = hashlib.sha256()
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "code" and SHOW_TAG not in tags:
            source = cell["source"]
            source = "".join(source) if isinstance(source, list) else source
            source = _PIN.sub("mtlbook==<version>", source)
            digest.update(source.strip().encode() + b"\0")
    return digest.hexdigest()


def _find(chapter, directory):
    if directory is not None:
        return pathlib.Path(directory) / f"{chapter}.json"
    for candidate in (pathlib.Path("..") / "results",
                      pathlib.Path("book") / "results",
                      pathlib.Path("results")):
        if (candidate / f"{chapter}.json").is_file():
            return candidate / f"{chapter}.json"
    return None


def load(chapter, directory=None):
    """Reads a chapter's stored full-size results.

    Args:
        chapter: str. The chapter's file name without `.ipynb`.
        directory: str, path or None. The results folder; None looks in
            `../results` (a chapter's working directory), then
            `book/results` and `results`.

    Returns:
        dict with the stored record, `tables` rebuilt as DataFrames and
        `figure_paths` mapping figure names to PNG paths; None when no
        stored run exists.
    """
    _check_name("chapter", chapter)
    if directory is not None:
        _check_path("directory", directory, "a str, a path or None")
    path = _find(chapter, directory)
    if path is None or not path.is_file():
        return None
    import pandas as pd

    record = json.loads(path.read_text())
    tables = {}
    for name, table in record.get("tables", {}).items():
        frame = pd.DataFrame(table["data"],
                             columns=_labels_from_json(table["columns"]),
                             index=_labels_from_json(table["index"]))
        if table.get("index_name") is not None:
            frame.index.name = table["index_name"]
        tables[name] = frame.infer_objects()
    record["tables"] = tables
    record["figure_paths"] = {
        name: path.parent / f"{chapter}-{name}.png"
        for name in record.get("figures", [])
    }
    return record


def provenance(record):
    """One line: size, date, commit, hardware and run time of a record.

    Args:
        record: dict. A record returned by `load`; missing entries show
            as `?` (or are left out).

    Returns:
        A str of Markdown.

    Example:

    ```python
    print(provenance(load("loss_weighting")))
    ```
    """
    if not isinstance(record, dict):
        raise TypeError(
            "`record` must be a dict returned by `load`. "
            f"Received: record={_shown(record)}"
        )
    hardware = record.get("hardware", {})
    gpus = hardware.get("gpus") or []
    where = (f"{len(gpus)} GPU(s)" if gpus else
             f"{hardware.get('cpus_available', '?')} CPU cores "
             f"({hardware.get('machine', '?')})")
    seconds = record.get("run_time_s")
    took = f", {seconds / 60:.1f} min" if seconds is not None else ""
    commit = str(record["commit"])[:10] if record.get("commit") else (
        "uncommitted")
    versions = record.get("versions", {})
    stack = ", ".join(f"{k} {v}" for k, v in versions.items()
                      if k in ("keras", "tensorflow"))
    if record.get("uncommitted_changes"):
        commit += "` plus the chapter's then uncommitted edits, code `"
        commit += record.get("code_hash", "?")[:10]
    size, date = record.get("size", "?"), record.get("date", "?")[:10]
    return (f"size `{size}`, run {date} "
            f"at commit `{commit}` on {where}{took}; {stack}")


def _code_spans(text):
    """`text` as HTML, with its `backquoted` parts as <code>."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{piece}</code>" if index % 2 else piece
                   for index, piece in enumerate(pieces))


def show(chapter, directory=None, tables=None, figures=None):
    """Displays a chapter's stored full-size results with their provenance.

    Everything is one HTML output (tables, then the figures as embedded
    PNG images), so that a rendered page's figure caption for the cell
    appears once.

    Args:
        chapter: str. The chapter's file name without `.ipynb`.
        directory: str, path or None. See `load`.
        tables: list of table names to show, or None for all.
        figures: list of figure names to show, or None for all.

    Returns:
        The record of `load`, or None (after saying so) when there is none.
    """
    from IPython.display import HTML, Markdown, display

    record = load(chapter, directory)
    if record is None:
        display(Markdown(
            f"*No stored full-size run of `{chapter}` here: run it with "
            f"`make full CHAPTER={chapter}` (or set `MTLBOOK_SIZE=full`). "
            "The repository keeps one under `book/results/`.*"))
        return None
    # One output for the whole record: a rendered page gives a cell's
    # figure caption to each output, so several outputs would repeat it.
    parts = ["<p><strong>Stored full-size run</strong> ("
             + _code_spans(provenance(record)) + ")</p>"]
    for name, table in record["tables"].items():
        if tables is None or name in tables:
            parts.append(f"<p><em>{html.escape(name.replace('_', ' '))}"
                         "</em></p>")
            parts.append(table.to_html(
                float_format=lambda value: f"{value:.4g}", border=0))
    for name, path in record["figure_paths"].items():
        if figures is None or name in figures:
            data = base64.b64encode(pathlib.Path(path).read_bytes())
            parts.append(
                f'<p><img src="data:image/png;base64,{data.decode()}" '
                f'alt="stored full-size run: {html.escape(name)}" '
                'style="max-width: 100%"></p>')
    display(HTML("\n".join(parts)))
    return record
