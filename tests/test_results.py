"""Stored full-size results: the module, and the book's stored runs.

`test_stored_results_match_their_chapters` is the staleness guard: a
chapter whose code cells changed after its full-size run fails here until
`make full CHAPTER=<name>` runs it again.
"""

import json
import pathlib
import re

import matplotlib

matplotlib.use("Agg")  # this process only; kernels are not affected

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mtlbook import results  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
STORED = sorted((ROOT / "book" / "results").glob("*.json"))
CHAPTERS = {p.stem: p for p in (ROOT / "book").glob("*/*.ipynb")}


def test_store_is_a_no_op_without_a_results_folder(monkeypatch):
    monkeypatch.delenv("MTLBOOK_RESULTS_DIR", raising=False)
    assert results.store("chapter", numbers={"a": 1}) is None


def test_store_load_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLBOOK_SIZE", "full")
    table = pd.DataFrame({"loss": [0.5, 0.25], "name": ["a", "b"]},
                         index=pd.Index([1.0, 0.5], name="correlation"))
    figure, axes = plt.subplots()
    axes.plot([0, 1])
    path = results.store("my_chapter", tables={"losses": table},
                         numbers={"delta_m": 1.5}, figures={"curve": figure},
                         directory=tmp_path)
    plt.close(figure)
    assert path == tmp_path / "my_chapter.json"
    assert (tmp_path / "my_chapter-curve.png").stat().st_size > 1000
    record = results.load("my_chapter", tmp_path)
    assert record["size"] == "full"
    assert record["numbers"] == {"delta_m": 1.5}
    pd.testing.assert_frame_equal(record["tables"]["losses"], table)
    assert record["figure_paths"]["curve"].is_file()
    assert "cpu_count" in record["hardware"]
    assert "size `full`" in results.provenance(record)
    assert results.load("other_chapter", tmp_path) is None


def test_store_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="`chapter`"):
        results.store("My Chapter", directory=tmp_path)
    with pytest.raises(TypeError, match="`numbers`"):
        results.store("c", numbers=[1, 2], directory=tmp_path)
    with pytest.raises(TypeError, match=r"`tables\['t'\]`.*list"):
        results.store("c", tables={"t": [1]}, directory=tmp_path)
    with pytest.raises(ValueError, match="`numbers key`"):
        results.store("c", numbers={"a b": 1}, directory=tmp_path)


def test_code_hash_ignores_markdown_and_show_cells(tmp_path):
    def notebook(code, markdown="text", show="results.show('c')"):
        cells = [
            {"cell_type": "markdown", "metadata": {}, "source": markdown},
            {"cell_type": "code", "metadata": {}, "source": [code]},
            {"cell_type": "code", "metadata": {"tags": [results.SHOW_TAG]},
             "source": show},
        ]
        path = tmp_path / "n.ipynb"
        path.write_text(json.dumps({"cells": cells}))
        return results.code_hash(path)

    base = notebook("x = 1")
    assert notebook("x = 1", markdown="other text") == base
    assert notebook("x = 1", show="results.show('c', tables=['t'])") == base
    assert notebook("x = 2") != base
    pinned = notebook("%pip install -q mtlbook==0.1.0")
    assert notebook("%pip install -q mtlbook==0.2.0") == pinned
    assert notebook("%pip install -q mtlbook==0.2.0 other") != pinned


def test_show_displays_provenance_or_says_there_is_none(tmp_path, capsys):
    assert results.show("nothing_here", tmp_path) is None
    results.store("c", numbers={"a": 1}, directory=tmp_path)
    record = results.show("c", tmp_path)
    assert record["numbers"] == {"a": 1}


@pytest.mark.parametrize("path", STORED, ids=[p.stem for p in STORED])
def test_stored_results_match_their_chapters(path):
    record = json.loads(path.read_text())
    chapter = CHAPTERS.get(path.stem)
    assert chapter is not None, f"{path.name}: no chapter {path.stem}.ipynb"
    assert record["size"] == "full", f"{path.name} is not a full-size run"
    assert record["code_hash"] == results.code_hash(chapter), (
        f"{path.name} is stale: {chapter.name}'s code changed since its "
        f"full-size run; run `make full CHAPTER={path.stem}` and commit "
        "the new results"
    )
    for key in ("commit", "date", "run_time_s", "hardware", "versions"):
        assert key in record, f"{path.name} lacks its provenance ({key})"
    for name in record["figures"]:
        assert (path.parent / f"{path.stem}-{name}.png").is_file()


def test_every_chapter_that_shows_stored_results_has_them():
    stored = {p.stem for p in STORED}
    for name, chapter in CHAPTERS.items():
        cells = json.loads(chapter.read_text())["cells"]
        shows = any(results.SHOW_TAG in c.get("metadata", {}).get("tags", [])
                    for c in cells)
        if shows:
            assert name in stored, (
                f"{chapter.name} shows stored results but book/results/ "
                f"has no {name}.json: run `make full CHAPTER={name}`"
            )


def test_multi_index_tables_round_trip(tmp_path):
    columns = pd.MultiIndex.from_tuples([("mean", "a"), ("std", "a")])
    index = pd.MultiIndex.from_tuples([("x", 1), ("y", 2)])
    table = pd.DataFrame([[0.5, 0.1], [0.25, 0.2]], columns=columns,
                         index=index)
    results.store("multi", tables={"t": table}, directory=tmp_path)
    loaded = results.load("multi", tmp_path)["tables"]["t"]
    pd.testing.assert_frame_equal(loaded, table)
    # labels an older store wrote as their repr load as a MultiIndex too
    record = json.loads((tmp_path / "multi.json").read_text())
    record["tables"]["t"]["columns"] = ["('mean', 'a')", "('std', 'a')"]
    (tmp_path / "multi.json").write_text(json.dumps(record))
    loaded = results.load("multi", tmp_path)["tables"]["t"]
    assert list(loaded.columns) == [("mean", "a"), ("std", "a")]


def test_store_rejects_a_figure_that_is_not_one(tmp_path):
    folder = tmp_path / "results"
    with pytest.raises(TypeError, match=r"`figures\['f'\]`.*'figure'"):
        results.store("c", figures={"f": "figure"}, directory=folder)
    assert not folder.exists()  # checked before anything is written


@pytest.mark.parametrize("directory", [3, 1.5, b"folder"])
def test_store_and_load_reject_a_directory_that_is_not_a_path(directory):
    match = rf"`directory`.*Received: directory={re.escape(repr(directory))}"
    with pytest.raises(TypeError, match=match):
        results.store("c", numbers={"a": 1}, directory=directory)
    with pytest.raises(TypeError, match=match):
        results.load("c", directory)


def test_code_hash_rejects_a_notebook_that_is_not_a_path():
    with pytest.raises(TypeError, match="`notebook`.*Received: notebook=3"):
        results.code_hash(3)


@pytest.mark.parametrize("record", ["record", None, [1]])
def test_provenance_rejects_a_record_that_is_not_a_dict(record):
    match = rf"`record`.*Received: record={re.escape(repr(record))}"
    with pytest.raises(TypeError, match=match):
        results.provenance(record)


def test_provenance_of_an_empty_record_is_a_line():
    line = results.provenance({})
    assert line.startswith("size `?`, run ? at commit `uncommitted` on ?")
