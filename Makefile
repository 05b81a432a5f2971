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
PERF_ARGS ?=

.PHONY: setup test bench zeroshot pretrain sweep leaderboard lint format perf clean

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

# Evaluate the scale's pretrained backbone without training (MODEL= and PRETRAINED= pick others).
zeroshot: setup
	$(BIN)/xmodal-bench zeroshot --data $(DATA) --scale $(SCALE) --data-root $(DATA_ROOT) \
		--runs-dir $(RUNS_DIR) $(if $(MODEL),--model $(MODEL)) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) $(ARGS)

# Rebuild the tiny scale's pretrained start (synthclip) from its recipe; RESUME=1 continues.
pretrain: setup
	$(BIN)/xmodal-bench pretrain --data-root $(DATA_ROOT) --runs-dir $(RUNS_DIR) $(if $(RESUME),--resume) $(ARGS)

perf: setup
	$(BIN)/python benchmarks/perf/metrics_engine.py $(PERF_ARGS)
	$(BIN)/python benchmarks/perf/data_loading.py $(PERF_ARGS)
	$(BIN)/python benchmarks/perf/training_step.py $(PERF_ARGS)
	$(BIN)/python benchmarks/perf/two_stage_latency.py $(PERF_ARGS)
	$(BIN)/python benchmarks/perf/cli_start.py $(PERF_ARGS)
	$(BIN)/python benchmarks/perf/score_end_to_end.py $(PERF_ARGS)

# SWEEP = a file under benchmarks/sweeps/ (synth, ci, ...) or a path; the sweep file names its own
# data, runs and leaderboards folders. Extra flags or key=value overrides for every run: ARGS.
sweep: setup
	$(BIN)/xmodal-bench sweep --config $(SWEEP) $(ARGS)

leaderboard: setup
	$(BIN)/xmodal-bench leaderboard --runs-dir $(RUNS_DIR) $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(RUNS_DIR) .pytest_cache .ruff_cache
