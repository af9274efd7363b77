"""End to end on the embedded default: DPO raises the oracle reward over the SFT reference, and two
controls keep that honest (learning rate 0 changes nothing; shuffled preferences do not help).

Runs in-process through Hydra's compose API with a shorter SFT than `make run` (cached for the
session), so the three runs share one reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from prefrun.runner import run

CONF = str(Path(__file__).resolve().parents[1] / "conf")
FAST = [
    "logger=none",
    "sft.steps=400",
    "dataset.sft_records=8000",
    "dataset.train_prompts=3200",
    "train.steps=100",
    "eval.oracle.prompts=256",
]


def compose_run(tmp: Path, *overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose(
            "config", overrides=[f"paths.output_dir={tmp}/out", f"paths.cache_dir={tmp}/cache", *FAST, *overrides]
        )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


def run_named(workdir: Path, name: str, *overrides: str) -> dict:
    cfg = compose_run(workdir, *overrides)
    return run(cfg, workdir / "out" / name, overrides=list(overrides))


@pytest.fixture(scope="module")
def default_results(workdir) -> dict:
    return run_named(workdir, "default")


@pytest.mark.slow
def test_dpo_raises_the_oracle_reward_over_the_sft_reference(default_results):
    ev = default_results["eval"]
    assert ev["policy/oracle_reward"] > ev["reference/oracle_reward"]
    assert ev["win_rate"] > 0.5
    assert ev["kl"] > 0


@pytest.mark.slow
def test_the_run_directory_describes_itself(default_results):
    run_dir = Path(default_results["run_dir"])
    for name in ("config.yaml", "overrides.yaml", "metrics.jsonl", "results.json", "env.json", "plots/training.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "model" / "model.safetensors").is_file()  # the trained policy is kept
    env = json.loads((run_dir / "env.json").read_text())
    assert env["versions"]["trl"] and env["versions"]["torch"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for stage in ("sft", "train"):  # the SFT reference's own steps, then preference training's
        steps = [row["step"] for row in rows if row["kind"] == "step" and row["stage"] == stage]
        assert steps and steps == sorted(steps) and len(steps) == len(set(steps)), stage
    timings = default_results["timings"]
    assert set(timings) >= {"build_s", "sft_s", "train_s", "eval_s", "wall_s"}


@pytest.mark.slow
def test_learning_rate_zero_leaves_the_reward_exactly_unchanged(workdir, default_results):
    ev = run_named(workdir, "lr0", "train.lr=0")["eval"]
    assert ev["policy/oracle_reward"] == ev["reference/oracle_reward"]
    assert ev["win_rate"] == 0.5
    assert ev["kl"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.slow
def test_shuffled_preferences_do_not_raise_the_reward(workdir, default_results):
    ev = run_named(workdir, "shuffled", "dataset.shuffle_scores=true")["eval"]
    assert ev["policy/oracle_reward"] <= ev["reference/oracle_reward"] + 0.005
    # and the real preferences do better than the shuffled ones
    assert default_results["eval"]["policy/oracle_reward"] > ev["policy/oracle_reward"]
