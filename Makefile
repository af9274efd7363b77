# prefrun: `make run` sets up and runs the embedded default; `make test` sets up and passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on disk on these machines; install that pin first so nothing pulls
# a multi-GB CUDA build. GPU users: install your torch first, then `pip install -e .`.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup run test lint bench repro-lipo repro-curry repro-zoo clean

$(BIN)/prefrun: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

setup: $(BIN)/prefrun

run: setup
	$(BIN)/prefrun

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -x --durations=15

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python scripts/bench.py

# Each study chooses every variant's hyperparameters on validation prompts, runs 3 seeds on test
# prompts and prints prefrun-compare of the result (scripts/repro.py).
repro-lipo: setup
	$(BIN)/python scripts/repro.py lipo_vs_dpo logger=none

repro-curry: setup
	$(BIN)/python scripts/repro.py curry_dpo logger=none

repro-zoo: setup
	$(BIN)/python scripts/repro.py zoo logger=none

clean:
	rm -rf outputs/* .pytest_cache
