# One-command set-up, run and test. `make run` / `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed before the package, so the package's open range `torch>=2.3,<3` keeps it. From PyPI,
# `torch==2.13.0` on Linux x86-64 is the CUDA build: a 526.6 MB wheel that pulls nvidia-cudnn-cu13,
# nvidia-nccl-cu13, triton, ... (several GB). PyTorch's CPU-only wheels for Linux come from its own index:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (this project's dev machine has a local CPU wheel that pip picks up without it).
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup run test test-fast lint bench tensorboard clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
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

tensorboard: setup
	$(BIN)/tensorboard --logdir outputs

bench: setup
	$(BIN)/python -m posenc_exp.bench overhead

clean:
	rm -rf $(VENV) outputs/runs outputs/multiruns
