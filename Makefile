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

repro-lipo: setup
	$(BIN)/prefrun -m experiment=lipo_vs_dpo
	$(BIN)/prefrun-compare outputs/lipo_vs_dpo

repro-curry: setup
	$(BIN)/prefrun -m experiment=curry_dpo
	$(BIN)/prefrun-compare outputs/curry_dpo

repro-zoo: setup
	$(BIN)/prefrun -m experiment=zoo
	$(BIN)/prefrun-compare outputs/zoo

clean:
	rm -rf outputs/* .pytest_cache
