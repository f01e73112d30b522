# Two commands on a fresh machine:
#   make book   build the HTML book (executes the notebooks, cached)
#   make test   run every test: unit tests, every notebook under nbval,
#               and a warning-free book build (execution off: nbval just ran
#               every notebook)
# Each one creates .venv from requirements.txt first if needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The package's floor (requirements-floor.txt = pyproject's lower bounds).
FLOOR_VENV := .venv-floor
FLOOR_BIN := $(FLOOR_VENV)/bin
FLOOR_STAMP := $(FLOOR_VENV)/.installed
# Colab's versions (requirements-colab.txt), Python 3.13 as on Colab: the
# first interpreter that runs (a pyenv shim may exist but not run).
COLAB_PYTHON ?= $(firstword $(foreach p,python3.13 \
	$(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) \
	/usr/bin/python3.13 /usr/local/bin/python3.13,\
	$(shell $(p) -c "import sys; assert sys.version_info[:2] == (3, 13)" \
		2>/dev/null && echo $(p))))
COLAB_VENV := .venv-colab
COLAB_BIN := $(COLAB_VENV)/bin
COLAB_STAMP := $(COLAB_VENV)/.installed
JB_FLAGS := -W -n --keep-going

# The one place where the environment of every kernel is set: quiet
# TensorFlow start-up logs, deterministic oneDNN-free CPU kernels. Never set
# MPLBACKEND here: under Agg a kernel displays no figure, so the book would
# have none (tests/test_figures.py checks this environment).
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test test-colab test-colab-notebooks test-floor check-book \
	check-rendered execute full dist venv clean

venv: $(STAMP)

# $(call venv,python,folder,requirements file): one environment, checked.
define venv
	$(1) -m venv $(2)
	$(2)/bin/python -m pip install -q --upgrade pip
	$(2)/bin/python -m pip install -q -r $(3)
	$(2)/bin/python -m pip check
	touch $(2)/.installed
endef

$(STAMP): requirements.txt pyproject.toml
	$(call venv,$(PYTHON),$(VENV),requirements.txt)

$(COLAB_STAMP): requirements-colab.txt pyproject.toml
	@test -n "$(COLAB_PYTHON)" || { echo "Colab's environment needs Python \
	3.13 (found none on PATH or in ~/.pyenv): install it, or set \
	COLAB_PYTHON=/path/to/python3.13"; exit 1; }
	$(call venv,$(COLAB_PYTHON),$(COLAB_VENV),requirements-colab.txt)

$(FLOOR_STAMP): requirements-floor.txt pyproject.toml
	$(call venv,$(PYTHON),$(FLOOR_VENV),requirements-floor.txt)

book: $(STAMP)
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "Book: _build/html/index.html"

# Colab's environment is created in the background while the main suite
# runs (mostly downloading and unpacking), then its unit tests run.
test: $(STAMP)
	@mkdir -p _build
	@$(MAKE) --no-print-directory $(COLAB_STAMP) > _build/venv-colab.log 2>&1 & \
	venv=$$!; \
	$(BIN)/python -m pytest --ignore=tests/test_full_smoke.py; tests=$$?; \
	wait $$venv || { cat _build/venv-colab.log; echo "Creating \
	$(COLAB_VENV) failed (log above)"; exit 1; }; exit $$tests
	$(MAKE) test-colab
	$(MAKE) test-jax
	$(MAKE) check-book

# The unit tests again under Colab's versions: what a reader's Colab runtime
# runs, including every chapter's full-size code path on fixture files
# (tests/test_full_smoke.py, run only here: a Colab reader meets Colab's
# versions). Left out here, run once on the pinned versions by the main
# pass: the repository and diagram checks, the benchmark and multi-worker
# tests, the non-finite-step guard, the exact-solver numerics against NumPy
# references and the copy-one-file checks. `make test-colab-all` runs them
# all (the release check and the CI matrix).
COLAB_PYTEST := $(COLAB_BIN)/python -m pytest -o addopts="-p no:cacheprovider \
	-n 2 --dist loadfile" -p no:nbval
COLAB_ONCE := tests/test_bench.py tests/test_multiworker.py \
	tests/test_training_guard.py tests/test_weighting_numerics.py \
	tests/test_copyable.py
test-colab: $(COLAB_STAMP)
	$(COLAB_PYTEST) tests --ignore=tests/test_repository.py \
		--ignore=tests/test_diagrams.py $(addprefix --ignore=,$(COLAB_ONCE))

.PHONY: test-colab-all
test-colab-all: $(COLAB_STAMP)
	$(COLAB_PYTEST) tests --ignore=tests/test_repository.py \
		--ignore=tests/test_diagrams.py

# The backend-neutral unit tests again on JAX: the layers, loss weightings
# and gradient methods use keras.ops only. Tests that need TensorFlow are
# marked `tensorflow` and deselected here.
JAX_TESTS := tests/test_layers.py tests/test_gradient_reversal.py \
	tests/test_weighting.py tests/test_copyable.py tests/test_layer_harness.py \
	tests/test_weighting_state.py tests/test_weighting_numerics.py \
	tests/test_continual.py tests/test_distillation.py tests/test_adapter.py \
	tests/test_lora.py tests/test_rlw_famo.py tests/test_imtl_aligned.py \
	tests/test_nash.py tests/test_grouping.py
.PHONY: test-jax
test-jax: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -o addopts="-p no:cacheprovider \
		-n 2 --dist loadfile" -p no:nbval -m "not tensorflow" $(JAX_TESTS)

# The unit tests at the package's lower bounds (the oldest Keras, TensorFlow,
# NumPy, scikit-learn and matplotlib it claims to support); the "floor" job
# of the GitHub Actions matrix.
test-floor: $(FLOOR_STAMP)
	$(FLOOR_BIN)/python -m pytest -o addopts="-p no:cacheprovider \
		-n 2 --dist loadfile" -p no:nbval tests \
		--ignore=tests/test_repository.py --ignore=tests/test_diagrams.py

# Every chapter under Colab's versions (not part of `make test`: it doubles
# the notebook time; run it before a release and in the CI matrix).
test-colab-notebooks: $(COLAB_STAMP)
	$(COLAB_BIN)/python -m pytest -o addopts="-p no:cacheprovider \
		--nbval-lax --nbval-cell-timeout=600 -n 2 --dist loadfile" book

# Build the book without executing notebooks into its own folder, failing on
# any warning (broken toc entry, reference, citation or page). Always a clean
# build: an incremental Sphinx build can report stale-environment warnings.
check-book: $(STAMP)
	rm -rf _build/check
	mkdir -p _build/check
	sed 's/^\(  *execute_notebooks:\).*/\1 "off"/' _config.yml > _build/check/_config.yml
	$(BIN)/jupyter-book build . $(JB_FLAGS) --config _build/check/_config.yml \
		--path-output _build/check
	$(BIN)/python tools/check_rendered.py --static _build/check/_build/html
	@echo "Book check passed (no warnings)."

# What a reader sees, on the executed book of `make book`: every cell that
# draws shows its figure, no error/stderr output, every figure captioned,
# formulas typeset by the bundled MathJax and code within the page, checked
# in headless Chromium (Debian: apt-get install chromium). Screenshots of
# every page go to _build/screenshots/.
check-rendered: book
	$(BIN)/python tools/check_rendered.py --browser \
		--screenshots _build/screenshots _build/html

# The release files (sdist + wheel) in dist/, checked with twine; see
# "Publishing a release" in CONTRIBUTING.md.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

# Run chapters as the book build does, keeping outputs and figures in
# _build/executed/ (never in book/):
#   make execute NB="book/multitask/loss_weighting.ipynb ..."
execute: $(STAMP)
	$(BIN)/python tools/execute.py $(NB)

# One chapter at its published size (MTLBOOK_SIZE=full), e.g.
#   make full CHAPTER=soft_sharing_and_experts
# Its key numbers and figures go to book/results/ with their provenance;
# tests/test_results.py fails when they no longer match the chapter's code.
full: $(STAMP)
	@test -n "$(wildcard book/*/$(CHAPTER).ipynb)" || { echo "CHAPTER must \
	name a chapter, e.g. make full CHAPTER=gradient_surgery"; exit 1; }
	MTLBOOK_SIZE=full $(BIN)/python tools/execute.py --store --timeout 3600 \
		$(wildcard book/*/$(CHAPTER).ipynb)

clean:
	rm -rf _build .jupyter_cache dist
