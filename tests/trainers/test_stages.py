"""Curriculum training end to end: sequential order within a run, and iterative stages whose reference is
the previous stage's policy (its reference log-probs computed anew, not taken from the SFT cache)."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from prefrun.runner import run

CONF = str(Path(__file__).resolve().parents[2] / "conf")
SMALL = [
    "logger=none",
    "eval=none",
    "sft.enabled=false",
    "dataset.k=4",
    "dataset.train_prompts=24",
    "train.batch_size=6",
    "train.steps=6",
    "objective.beta=1.0",
]


def run_with(tmp_path: Path, *overrides: str) -> dict:
    args = [f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={tmp_path}/cache", *SMALL, *overrides]
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=args)
    return run(cfg, tmp_path / "run", overrides=args)


def test_iterative_curriculum_trains_three_stages_each_with_a_new_reference(tmp_path):
    results = run_with(tmp_path, "objective=curry_dpo", "objective.beta=1.0")
    stages = results["training"]["stages"]
    assert [s["stage"] for s in stages] == ["stage1", "stage2", "stage3"]
    assert [s["steps"] for s in stages] == [2, 2, 2]  # the same total budget as one run
    pairs = [s["pairs"] for s in stages]  # one pair per prompt and difficulty bucket; tied responses make none
    assert pairs[0] == 24 and pairs == sorted(pairs, reverse=True)
    # every stage computes the reference log-probs of its own reference (cache miss), none reuses another's
    assert all(s["reference_cache"]["misses"] == 1 and s["reference_cache"]["hits"] == 0 for s in stages)
    assert (tmp_path / "run" / "stages" / "stage1" / "config.json").exists()
    assert results["objective"] == "dpo+iterative"
    logged = {json.loads(line)["stage"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()}
    assert logged == {"stage1", "stage2", "stage3"}


def test_score_gap_curriculum_is_one_sequential_run(tmp_path):
    results = run_with(tmp_path, "curriculum=score_gap")
    stages = results["training"]["stages"]
    assert len(stages) == 1 and 24 < stages[0]["pairs"] <= 72  # ≤ 3 untied best-vs-other pairs per prompt
    assert results["objective"] == "dpo+score_gap"
