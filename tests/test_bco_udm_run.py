"""BCO with UDM end to end on model=tiny: `prefrun objective=bco objective.udm.enabled=true` on unpaired data
whose desirable and undesirable prompts differ, so the density-ratio weights are not all 1."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from prefrun.errors import PrefrunError
from prefrun.runner import run

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def write_feedback(path: Path, labels: list[bool] | None = None) -> Path:
    """24 rows: desirable prompts mostly questions about capitals, undesirable mostly arithmetic (3 swapped)."""
    rows = []
    for i in range(24):
        good = i % 2 == 0 if labels is None else labels[i]
        topic_capital = good != (i % 8 == 1 or i % 8 == 2)  # a few prompts of the other kind in each class
        prompt = f"What is the capital of country {i}?" if topic_capital else f"What is {i} plus {i + 3}?"
        completion = f"It is city {i}." if good else f"Maybe {i * 7}, not sure."
        rows.append({"prompt": prompt, "completion": completion, "label": good})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def compose_run(tmp: Path, data: Path, *extra: str) -> dict:
    overrides = [
        "dataset=kto_mix",
        f"dataset.path={data}",
        "objective=bco",
        "objective.udm.enabled=true",
        "logger=none",
        "eval=none",
        "dataset.holdout=0",  # every row trains: the counts below are the fixture's
        "train.steps=3",
        "train.batch_size=8",
        "train.logging_steps=1",
        "train.max_prompt_len=32",
        "train.max_response_len=16",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_heads=2",
        f"paths.output_dir={tmp}/out",
        f"paths.cache_dir={tmp}/c",
        *extra,
    ]
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run(cfg, tmp / "run", overrides=overrides)


def test_bco_trains_with_udm_weights(tmp_path):
    results = compose_run(tmp_path, write_feedback(tmp_path / "fb.jsonl"))
    udm = results["training"]["udm"]
    assert udm["sample_desirable"] == 12 and udm["sample_undesirable"] == 12
    assert udm["mean_undesirable_weight"] != pytest.approx(1.0, abs=1e-3)
    steps = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())]
    steps = [r for r in steps if r.get("kind") == "step"]
    assert len(steps) == 3
    # step 1: policy = reference and δ = 0, so every unweighted loss is log 2; the weights move the mean
    assert steps[0]["rewards/chosen"] == 0.0 and steps[0]["loss"] != pytest.approx(math.log(2), abs=1e-3)
    for row in steps:
        assert math.isfinite(row["loss"])
        assert 0.5 <= row["bco/udm_weight"] <= 10.0  # every batch of 8 holds undesirable examples here
    assert any(abs(row["bco/udm_weight"] - 1.0) > 1e-3 for row in steps)


@pytest.mark.parametrize(
    "extra, labels, message",
    [
        (["objective.udm.min_density_ratio=20"], None, "min_density_ratio=20.0 and max_density_ratio=10.0"),
        ([], [True] * 24, "24 desirable and 0 undesirable"),
    ],
    ids=["min_above_max", "one_class"],
)
def test_bad_udm_input_is_a_one_line_error(tmp_path, extra, labels, message):
    with pytest.raises(PrefrunError, match=message) as e:
        compose_run(tmp_path, write_feedback(tmp_path / "fb.jsonl", labels), *extra)
    assert "\n" not in str(e.value)
