# Every target installs what it needs into $(VENV) first.
PYTHON    ?= $(shell command -v python3.11 || command -v python3)
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed

METHOD    ?= clip
DATA      ?= synth
SCALE     ?= tiny
DATA_ROOT ?= data
RUNS_DIR  ?= runs
SWEEP     ?= synth
ARGS      ?=
PYTEST_ARGS ?=

.PHONY: setup test bench sweep leaderboard lint format perf clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: setup
	$(BIN)/xmodal-bench bench --method $(METHOD) --data $(DATA) --scale $(SCALE) \
		--data-root $(DATA_ROOT) --runs-dir $(RUNS_DIR) $(if $(RESUME),--resume) $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(RUNS_DIR) .pytest_cache .ruff_cache
