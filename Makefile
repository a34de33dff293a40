# One-command set-up, run and test. `make run` / `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch, installed before the package so pip never resolves a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup run test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	$(BIN)/python -m posenc_exp.train

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src tests && $(BIN)/ruff format --check src tests

bench: setup
	$(BIN)/python -m posenc_exp.bench overhead

clean:
	rm -rf $(VENV) outputs/runs outputs/multiruns
