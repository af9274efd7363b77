"""metrics.jsonl on resume: the resumed stage's lines past the checkpoint go, other stages' lines (sft) stay."""

from __future__ import annotations

import json

from prefrun.results.metrics_log import MetricsFile, training_summary


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn": ')


SFT = [{"stage": "sft", "step": s, "kind": "step", "loss": 1.0} for s in (100, 200)]
TRAIN = [{"stage": "train", "step": s, "kind": "step", "logps/chosen": -s / 10} for s in (10, 20, 30)]


def test_truncating_one_stage_keeps_the_others_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, SFT + TRAIN)
    MetricsFile(path).truncate_after(20, "train")
    assert MetricsFile(path).rows() == SFT + TRAIN[:2]


def test_truncating_without_a_stage_cuts_every_line_past_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, SFT + TRAIN)
    MetricsFile(path).truncate_after(20)
    assert MetricsFile(path).rows() == TRAIN[:2]


def test_the_training_summary_ignores_the_sft_stage(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{**r, "logps/chosen": 5.0} for r in SFT] + TRAIN
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_summary(path) == {"logps/chosen_change": -3.0 - -1.0}
