"""apply_selection: the registry, the content-hashed cache (a sweep's second run is a hit), the report, the YAMLs."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path

import pytest
import yaml

from prefrun.config import CONF_DIR
from prefrun.data import synthetic
from prefrun.data.records import records_fingerprint
from prefrun.errors import PrefrunError
from prefrun.selection.steps import SELECTION_STEPS, apply_selection

SELECT_CONF = Path(CONF_DIR) / "data" / "select"


def sort_records(n: int, seed: int = 1) -> list[dict]:
    return synthetic.preference_records(synthetic.SortTask(), n, k=3, max_swaps=4, corrupt_prob=0.2, seed=seed)


def deita(**params) -> dict:
    return {"name": "deita", "fraction": 0.25, **params}


def test_the_second_call_is_a_cache_hit_with_the_same_records(tmp_path):
    records = sort_records(40)
    first, report1 = apply_selection(records, deita(), tmp_path)
    second, report2 = apply_selection(records, deita(), tmp_path)
    assert (report1["cache_hit"], report2["cache_hit"]) == (False, True)
    assert first == second and len(first) == 10
    cached = json.loads(Path(report2["cache_file"]).read_text())
    assert [records[i] for i in cached["indices"]] == first
    assert report2["computed_seconds"] == report1["computed_seconds"]
    assert Path(report1["cache_file"]).parent == tmp_path / "selection"
    assert not list((tmp_path / "selection").glob("*.tmp*"))  # the temporary file was renamed


def test_the_key_follows_the_records_and_the_parameters_but_not_the_cost_settings(tmp_path):
    records = sort_records(40)
    _, base = apply_selection(records, deita(), tmp_path)
    _, other_tau = apply_selection(records, deita(tau=0.5), tmp_path)
    _, other_records = apply_selection(sort_records(40, seed=2), deita(), tmp_path)
    _, other_batch = apply_selection(records, deita(batch_size=8), tmp_path)  # cache_exempt
    assert not other_tau["cache_hit"] and not other_records["cache_hit"]
    assert other_batch["cache_hit"] and other_batch["cache_file"] == base["cache_file"]
    assert len({base["cache_file"], other_tau["cache_file"], other_records["cache_file"]}) == 3


def test_the_report_names_inputs_parameters_and_counts(tmp_path):
    records = sort_records(20)
    kept, report = apply_selection(records, deita(), tmp_path)
    plain = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()  # the canonical JSON, at once
    assert report["inputs"] == {"records": plain} == {"records": records_fingerprint(records)}
    assert report["counts"] == {"in": 20, "kept": len(kept), "dropped": 20 - len(kept)}
    assert report["params"]["tau"] == 0.9 and report["params"]["fraction"] == 0.25  # defaults included
    json.dumps(report)  # it goes into data_steps.json as it is


def test_zipfit_fingerprints_its_target_file(tmp_path):
    target = tmp_path / "t.jsonl"
    target.write_text(json.dumps(sort_records(1, seed=5)[0]) + "\n")
    step = {"name": "zipfit", "target": str(target), "k": 3, "processes": 1}
    _, first = apply_selection(sort_records(10), step, tmp_path)
    _, again = apply_selection(sort_records(10), {**step, "processes": 2}, tmp_path)
    target.write_text(json.dumps(sort_records(1, seed=6)[0]) + "\n")
    _, changed = apply_selection(sort_records(10), step, tmp_path)
    assert again["cache_hit"] and not changed["cache_hit"]
    assert first["inputs"]["target"] != changed["inputs"]["target"]


def test_an_unreadable_cache_file_is_recomputed(tmp_path, caplog):
    records = sort_records(20)
    kept, report = apply_selection(records, deita(), tmp_path)
    Path(report["cache_file"]).write_text('{"indices": [0, 1')
    with caplog.at_level(logging.WARNING, logger="prefrun"):
        again, report2 = apply_selection(records, deita(), tmp_path)
    assert again == kept and not report2["cache_hit"] and "unreadable cache file" in caplog.text


def test_none_keeps_every_record(tmp_path):
    records = sort_records(5)
    kept, report = apply_selection(records, {"name": "none"}, tmp_path)
    assert kept == records and report["counts"] == {"in": 5, "kept": 5, "dropped": 0}
    assert apply_selection(records, None, tmp_path)[0] == records
    assert not (tmp_path / "selection").exists()


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"name": "dsir"}, "unknown data selection step 'dsir'; available: deita, none, random, zipfit"),
        ({"fraction": 0.1}, "data.select has no name"),
        ({"name": "deita", "fraction": 0.1, "theta": 0.9}, "data.select.theta is not a parameter of data.select=deita"),
    ],
)
def test_bad_steps_are_one_line_errors(tmp_path, step, message):
    with pytest.raises(PrefrunError, match=message):
        apply_selection(sort_records(3), step, tmp_path)


@pytest.mark.parametrize("path", sorted(SELECT_CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_yaml_names_a_step_and_only_its_parameters(path):
    cfg = yaml.safe_load(path.read_text())
    assert cfg["name"] == path.stem and path.read_text().startswith("# @package data.select")
    step = SELECTION_STEPS.get(cfg.pop("name"))
    signature = inspect.signature(step).parameters
    assert set(cfg) == set(signature)  # every parameter documented in the YAML, none invented
    for key, value in cfg.items():
        if key not in ("target", "k", "fraction"):  # the YAML's budget and target are choices, not defaults
            assert value == signature[key].default, key


def test_the_group_composes_as_data_select():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["data/select=zipfit", "data.select.target=sort"])
    assert cfg.data.select.name == "zipfit" and cfg.data.select.target == "sort" and cfg.data.select.level == 9


def test_random_keeps_a_seeded_subset_of_the_budget_in_the_datasets_order(tmp_path):
    import random

    records = sort_records(20)
    kept, report = apply_selection(records, {"name": "random", "k": 5, "seed": 3}, tmp_path)
    want = sorted(random.Random(3).sample(range(20), 5))  # independently: the same draw
    assert kept == [records[i] for i in want] and report["counts"]["kept"] == 5
    other, _ = apply_selection(records, {"name": "random", "k": 5, "seed": 4}, tmp_path)
    assert other != kept
