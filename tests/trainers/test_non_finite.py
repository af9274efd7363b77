"""A step whose loss or gradient norm is NaN or infinite stops the run with one line, before it is applied.

Whatever the cause (here an infinite score, which LiPO's λ-weights turn into NaN), the run is not finished:
no results.json, and no NaN (or the 0.0 that transformers' NaN filter used to log instead) in metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import prefrun.trainers.preference as preference
from prefrun.errors import PrefrunError
from prefrun.runner import run
from prefrun.trainers.list_trainer import non_finite

CONF = str(Path(__file__).resolve().parents[2] / "conf")
MICRO = [
    "logger=none",
    "eval=none",
    "objective=lipo",
    "sft.enabled=false",  # the untrained tiny model is the reference: no SFT stage to wait for
    "dataset.train_prompts=16",
    "train.batch_size=4",
    "train.steps=3",
    "train.lr=1e-3",
    "train.logging_steps=1",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_heads=2",
]


def with_scores(records: list[dict], first: float) -> list[dict]:
    """Each record with its first response scored ``first`` (past the loader's checks), so batch 1 holds one."""
    return [{**r, "scores": [first, *r["scores"][1:]]} for r in records]


def test_an_infinite_score_stops_lipo_at_step_1_and_leaves_no_finished_run(tmp_path, monkeypatch):
    original = preference.train_preference

    def train_with_an_infinite_score(settings, objective, records, *args, **kwargs):
        return original(settings, objective, with_scores(records, math.inf), *args, **kwargs)

    monkeypatch.setattr(preference, "train_preference", train_with_an_infinite_score)
    overrides = [*MICRO, f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={tmp_path}/cache"]
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = tmp_path / "run"
    with pytest.raises(PrefrunError) as error:
        run(cfg, run_dir, overrides=overrides)
    message = str(error.value)
    assert "\n" not in message
    assert re.match(r"training diverged at step 1/3: the loss is (nan|-?inf) and the gradient norm is nan ", message)
    assert "objective=lipo" in message and "lower train.lr" in message and "scores" in message
    assert not (run_dir / "results.json").exists()
    metrics = run_dir / "metrics.jsonl"  # the diverged step was never logged (as NaN, or as the 0.0 of old)
    assert not metrics.exists() or not [json.loads(line) for line in metrics.read_text().splitlines()]


@pytest.mark.parametrize(
    "losses, grad_norms, expected",
    [
        ([0.7, math.inf], [1.0, 1.0], "the loss is inf"),  # one rank's half of the batch is enough
        ([0.7], [math.nan], "the gradient norm is nan"),
        ([-math.inf], [math.nan], "the loss is -inf and the gradient norm is nan"),
        ([0.7, 0.6], [1.5, 1.5], None),
    ],
    ids=["loss_inf_on_one_rank", "grad_norm_nan", "both", "finite"],
)
def test_non_finite_names_the_metric(losses, grad_norms, expected):
    assert non_finite(torch.tensor(losses), torch.tensor(grad_norms)) == expected
