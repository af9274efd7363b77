"""data/select before a preference run: the run trains on the kept records, records the step in data_steps.json and
results.json, and a second run of the same selection reads it from the cache."""

from __future__ import annotations

import json

from conftest import MICRO_RUN, compose_cfg

from prefrun.runner import run

SELECT = ["data/select=zipfit", "data.select.k=24", "data.select.fraction=null", "data.select.target=sort",
          "data.select.max_targets=16"]  # fmt: skip


def test_a_selection_step_is_recorded_cached_and_shrinks_the_training_data(tmp_path):
    overrides = [*MICRO_RUN, "train.steps=2", *SELECT]
    first = run(compose_cfg(tmp_path, *overrides), tmp_path / "a", overrides=overrides)
    (step,) = first["data_steps"]
    assert step["step"] == "zipfit" and step["counts"] == {"in": 64, "kept": 24, "dropped": 40}
    assert not step["cache_hit"]
    assert json.loads((tmp_path / "a" / "data_steps.json").read_text()) == first["data_steps"]
    assert first["data"]["records"] == 24  # what training saw: the kept records only
    second = run(compose_cfg(tmp_path, *overrides, "seed=1"), tmp_path / "b", overrides=overrides)
    assert second["data_steps"][0]["cache_hit"]
    assert second["data_steps"][0]["inputs"] == step["inputs"]


def test_without_a_step_nothing_is_dropped(tmp_path):
    overrides = [*MICRO_RUN, "train.steps=1"]
    results = run(compose_cfg(tmp_path, *overrides), tmp_path / "a", overrides=overrides)
    assert results["data_steps"][0]["step"] == "none"
    assert results["data_steps"][0]["counts"]["dropped"] == 0
