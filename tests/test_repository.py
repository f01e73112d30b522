"""Repository checks: notebooks, table of contents and configuration."""

import ast
import json
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
REPOSITORY = CONFIG["repository"]["url"].rstrip("/")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "version"
]
NOTEBOOK_CODE_COLUMNS = 88  # wider lines scroll sideways on the rendered page
NOTEBOOKS = sorted(
    p for p in (ROOT / "book").rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts
)


def toc_files():
    files = [TOC["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in TOC.get("parts", []):
        walk(part["chapters"])
    walk(TOC.get("chapters", []))
    return files


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"])


def test_there_are_notebooks():
    assert NOTEBOOKS


def test_every_toc_entry_exists():
    for entry in toc_files():
        matches = [ROOT / f"{entry}{s}" for s in ("", ".md", ".ipynb")]
        assert any(p.is_file() for p in matches), (
            f"{entry} in _toc.yml is missing"
        )


def test_every_notebook_is_in_the_toc():
    listed = set(toc_files())
    for path in NOTEBOOKS:
        stem = path.relative_to(ROOT).with_suffix("").as_posix()
        assert stem in listed, f"{stem} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_no_outputs(path):
    for cell in cells(path):
        if cell["cell_type"] == "code":
            assert not cell["outputs"], f"{path.name} is stored with outputs"
            assert cell["execution_count"] is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_colab_badge_and_install_point_to_itself(path):
    relative = path.relative_to(ROOT).as_posix()
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    first = source(cells(path)[0])
    assert first.startswith("# "), (
        f"{path.name}: first cell must open with the title"
    )
    colab = "https://colab.research.google.com/github/"
    badge = re.findall(re.escape(colab) + r"[^)\s]+", first)
    assert badge == [f"{colab}{owner_repo}/blob/main/{relative}"], (
        f"{path.name}: Colab badge must link to this very file"
    )
    tags = cells(path)[1]["metadata"].get("tags", [])
    assert "hide-output" in tags, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_installs_the_pinned_release(path):
    # The install cell runs in every reader's Colab session: it must take
    # this very release from the package index, never a repository branch.
    install = source(cells(path)[1])
    assert '"google.colab" in sys.modules' in install, path.name
    pins = re.findall(r"%pip install -q (\S+)", install)
    assert pins == [f"mtlbook=={VERSION}"], (path.name, pins)
    assert "git+" not in install and "github.com" not in install, path.name


@pytest.mark.parametrize(
    "document", ["README.md", "CONTRIBUTING.md", "book/intro.md"]
)
def test_documents_install_the_pinned_release(document):
    text = (ROOT / document).read_text()
    pins = re.findall(r"mtlbook==([\w.]+)", text)
    assert pins and set(pins) == {VERSION}, (document, pins)
    assert "git+https://" not in text, document


def test_repository_url_is_one_setting():
    # Badges, launch buttons and links derive from _config.yml's URL; no
    # notebook names another GitHub repository.
    assert REPOSITORY.startswith("https://github.com/")
    for path in NOTEBOOKS:
        for url in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+",
                              path.read_text()):
            assert url == REPOSITORY, (path.name, url)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_code_fits_the_page(path):
    long_lines = [
        line for c in cells(path) if c["cell_type"] == "code"
        for line in source(c).splitlines()
        if len(line) > NOTEBOOK_CODE_COLUMNS
    ]
    assert not long_lines, (
        f"{path.name}: {len(long_lines)} code lines over "
        f"{NOTEBOOK_CODE_COLUMNS} columns, e.g. {long_lines[0]!r}"
    )


def _last_statement_shows_a_figure_twice(code):
    """A bare `plot_*(...)`/`image_grid(...)` ending a cell, without `;`."""
    code = "\n".join(
        line for line in code.splitlines()
        if not line.lstrip().startswith(("%", "!"))
    )
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return False
    if not body or not isinstance(body[-1], ast.Expr):
        return False
    call = body[-1].value
    name = getattr(getattr(call, "func", None), "id", "")
    return (isinstance(call, ast.Call)
            and (name.startswith("plot_") or name == "image_grid")
            and not code.rstrip().endswith(";"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shows_each_figure_once(path):
    # mtlbook.plot draws with pyplot (the inline backend shows the figure)
    # and returns the Figure: as a cell's value it would be shown twice.
    twice = [
        source(c).splitlines()[-1] for c in cells(path)
        if c["cell_type"] == "code"
        and _last_statement_shows_a_figure_twice(source(c))
    ]
    assert not twice, f"{path.name}: end these cells with ';': {twice}"


def test_package_and_tests_pass_ruff():
    ruff = pathlib.Path(sys.executable).with_name("ruff")
    result = subprocess.run(
        [str(ruff), "check", "--no-cache", "."], cwd=ROOT,
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_states_its_claims(path):
    asserts = [
        c for c in cells(path)
        if c["cell_type"] == "code"
        and re.search(r"^\s*assert\b", source(c), re.M)
    ]
    assert asserts, f"{path.name} has no assert cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_skeleton_sections(path):
    headings = [
        line.strip() for c in cells(path) if c["cell_type"] == "markdown"
        for line in source(c).splitlines() if line.startswith("## ")
    ]
    for required in ("## Summary", "## Exercises", "## References"):
        assert required in headings, f"{path.name} lacks {required}"
    for c in cells(path):
        tags = c["metadata"].get("tags", [])
        assert "raises-exception" not in tags, path.name
        assert "nbval-skip" not in tags, path.name


def test_notebooks_use_the_python3_kernel():
    for path in NOTEBOOKS:
        spec = json.loads(path.read_text())["metadata"]["kernelspec"]
        assert spec["name"] == "python3", path.name


def test_requirements_are_pinned():
    lines = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
    ]
    packages = [line for line in lines if line and not line.startswith("-e")]
    assert packages and all("==" in line for line in packages), packages


def test_package_does_not_force_a_tensorflow_distribution():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("tensorflow") for d in project["dependencies"])


def _pins(name):
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            package, version = line.split("==")
            pins[package.strip().lower()] = version.strip()
    return pins


def test_lower_bounds_are_the_tested_floor():
    # pyproject.toml's lower bounds are exactly the versions that
    # requirements-floor.txt installs together and `make test-floor` tests.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = _pins("requirements-floor.txt")
    bounds = {}
    for requirement in project["dependencies"] + sum(
        project["optional-dependencies"].values(), []
    ):
        package, version = requirement.split(">=")
        bounds[package.strip().lower()] = version.strip()
    floor["tensorflow"] = floor.pop("tensorflow-cpu")
    for package, version in bounds.items():
        assert floor.get(package) == version, (package, version, floor)


def test_colab_environment_pins_the_core_packages():
    colab, ours = _pins("requirements-colab.txt"), _pins("requirements.txt")
    for package in ("tensorflow-cpu", "keras", "numpy", "scikit-learn"):
        assert package in colab and package in ours, package


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
