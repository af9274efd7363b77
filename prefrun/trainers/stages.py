"""Curriculum training (Curry-DPO): one sequential pass, or iterative stages with a moving reference.

Non-iterative: all best-vs-other pairs, easiest bucket first, one run with a sequential sampler and
the SFT reference. Iterative (``curriculum.stages = N > 1``): stage i trains on the i-th easiest pair
set for train.steps / N steps, starting from stage i−1's policy, saved to ``stages/stage<i−1>/``;
that saved model is stage i's reference, so its reference log-probs are computed anew (the cache key
holds the model's weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefrun.data.curriculum import curriculum_stages
from prefrun.errors import PrefrunError
from prefrun.objectives import Objective
from prefrun.trainers.preference import merged, train_preference
from prefrun.trainers.settings import TrainSettings


def train_curriculum(
    settings: TrainSettings,
    curriculum_cfg: Any,
    objective: Objective,
    records: list[dict],
    sft_path: str,
    run_dir: Path,
    device: str,
) -> tuple[Any, Any, dict[str, Any]]:
    """Returns (policy, tokenizer, stats) after the curriculum; the caller evaluates against the SFT model.

    Only the final policy is returned (and saved by the task); each intermediate stage's policy lives in
    ``stages/`` as the next stage's reference.
    """
    if objective.spec.data != "pairwise":
        raise PrefrunError(
            f"curriculum={curriculum_cfg.name} builds pairs; objective {objective.name} needs "
            f"{objective.spec.data} data: use a pairwise objective such as dpo"
        )
    n_stages = int(curriculum_cfg.stages)
    if n_stages < 1:
        raise PrefrunError(f"curriculum.stages={n_stages} must be ≥ 1")
    if n_stages == 1:
        buckets = curriculum_stages(records, stages=None, seed=settings.seed)  # every bucket in order, easiest first
        sets = [[pair for bucket in buckets for pair in bucket]]
    else:
        sets = curriculum_stages(records, stages=n_stages, seed=settings.seed)
    if not sets or not sets[0]:
        raise PrefrunError("the dataset yields no curriculum pair (all lists tied?)")
    steps = max(1, settings.steps // len(sets))
    init = sft_path
    stats: dict[str, Any] = {"stages": []}
    for i, pairs in enumerate(sets, 1):
        stage = "train" if len(sets) == 1 else f"stage{i}"
        policy, tokenizer, stage_stats = train_preference(
            settings.with_steps(steps), objective, pairs, init, run_dir, device, sequential=True, stage=stage
        )
        stats["stages"].append({"stage": stage, "pairs": len(pairs), "steps": steps, **stage_stats})
        if i < len(sets):
            init = str(run_dir / "stages" / stage)
            merged(policy).save_pretrained(init)
            tokenizer.save_pretrained(init)
    return policy, tokenizer, stats
