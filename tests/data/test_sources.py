"""Held-out data: a dataset's eval split read only when asked, or a seeded fraction of train held out."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from prefrun.data import loaders, synthetic
from prefrun.data.sources import EVAL_SEEDS, build_data
from prefrun.errors import PrefrunError


def write_pairs(path, n: int, tag: str = "") -> None:
    rows = [{"q": f"question {tag}{i}", "a": f"good {i}", "b": f"bad {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def dataset(path, **extra):
    cfg = {
        "name": "mine",
        "path": str(path),
        "schema": "pairwise",
        "fields": {"prompt": "q", "chosen": "a", "rejected": "b"},
        "splits": {"train": "train", "eval": "test"},
        "holdout": 0.05,
        **extra,
    }
    return OmegaConf.create(cfg)


def test_a_file_without_an_eval_split_holds_out_a_seeded_share_of_train(tmp_path):
    write_pairs(tmp_path / "prefs.jsonl", 200)
    data = build_data(dataset(tmp_path / "prefs.jsonl"), seed=0)
    held = data.eval_records
    assert data.held_out == len(held) == 10  # 5% of 200
    assert len(data.train) == 190
    train_prompts = {r["prompt"] for r in data.train}
    assert not train_prompts & {r["prompt"] for r in held}  # held out means not trained on
    assert train_prompts | {r["prompt"] for r in held} == {f"question {i}" for i in range(200)}
    assert data.eval_prompts == [r["prompt"] for r in held]
    other_seed = build_data(dataset(tmp_path / "prefs.jsonl"), seed=7)  # a sweep's other seed: the same rows
    assert other_seed.eval_records == held and other_seed.train == data.train
    assert build_data(dataset(tmp_path / "prefs.jsonl", holdout=0.1), seed=0).held_out == 20


def test_a_null_eval_split_holds_out_train_too(tmp_path):
    write_pairs(tmp_path / "prefs_train.jsonl", 40)
    cfg = dataset(tmp_path / "prefs_{split}.jsonl", splits={"train": "train", "eval": None})
    assert build_data(cfg, seed=0).held_out == 2


def test_a_named_eval_split_is_read_only_when_asked(tmp_path, monkeypatch):
    write_pairs(tmp_path / "prefs_train.jsonl", 40)
    write_pairs(tmp_path / "prefs_test.jsonl", 6, tag="t")
    calls = []
    real = loaders.load_records
    monkeypatch.setattr(loaders, "load_records", lambda cfg, split: calls.append(split) or real(cfg, split))
    data = build_data(dataset(tmp_path / "prefs_{split}.jsonl"), seed=0)
    assert calls == ["train"] and len(data.train) == 40 and data.held_out == 0
    assert [r["prompt"] for r in data.eval_records] == [f"question t{i}" for i in range(6)]
    assert data.eval_prompts == [f"question t{i}" for i in range(6)]
    assert calls == ["train", "eval"]  # read once, then kept


def test_a_missing_eval_split_names_it_and_suggests_holding_out(tmp_path):
    write_pairs(tmp_path / "prefs_train.jsonl", 40)
    data = build_data(dataset(tmp_path / "prefs_{split}.jsonl"), seed=0)  # training data alone is fine
    with pytest.raises(PrefrunError) as e:
        _ = data.eval_records
    message = str(e.value)
    assert "\n" not in message
    assert "eval split 'test'" in message and "prefs_test.jsonl" in message and "dataset.holdout" in message


def test_too_small_a_file_holds_out_nothing_and_says_so_when_asked(tmp_path):
    write_pairs(tmp_path / "prefs.jsonl", 10)  # 5% of 10 rounds down to none: training keeps every record
    data = build_data(dataset(tmp_path / "prefs.jsonl"), seed=0)
    assert len(data.train) == 10 and data.held_out == 0
    with pytest.raises(PrefrunError, match="holds out none; raise dataset.holdout"):
        _ = data.eval_records


@pytest.mark.parametrize("bad", [1.0, -0.1, "some"])
def test_holdout_must_be_a_fraction(tmp_path, bad):
    write_pairs(tmp_path / "prefs.jsonl", 10)
    with pytest.raises(PrefrunError, match="dataset.holdout="):
        build_data(dataset(tmp_path / "prefs.jsonl", holdout=bad), seed=0)


def test_the_sort_tasks_held_out_lists_come_from_its_eval_stream():
    from hydra import compose, initialize_config_dir

    from prefrun.config import CONF_DIR

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["dataset.eval_prompts=12"]).dataset
    task = synthetic.SortTask(cfg.min_len, cfg.max_len, cfg.vocab)
    for split, seed in EVAL_SEEDS.items():
        data = build_data(cfg, seed=0, eval_split=split)
        want = synthetic.preference_records(task, 12, cfg.k, cfg.max_swaps, cfg.corrupt_prob, seed=seed)
        assert data.eval_records == want
        assert data.eval_prompts == synthetic.eval_prompts(task, 12, seed=seed)  # the oracle's prompts, unchanged
        assert data.held_out == 0 and len(data.train) == cfg.train_prompts


def test_an_uncached_hub_dataset_without_a_hub_fails_fast_with_one_line(tmp_path):
    """Before: 38 s of HTTP retry warnings when the hub could not be reached."""
    import os
    import subprocess
    import sys
    import time

    proxies = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    env = {k: v for k, v in os.environ.items() if k not in (*proxies, "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9", WANDB_MODE="offline")
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_DATASETS_CACHE", None)
    cmd = [sys.executable, "-m", "prefrun", f"paths.output_dir={tmp_path}/out", "logger=none", "dataset=hh_rlhf"]
    started = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert time.time() - started < 15
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prefrun: error: dataset hh_rlhf (Anthropic/hh-rlhf) is not in the local Hugging Face")
    assert "the hub cannot be reached (http://127.0.0.1:9" in lines[0] and "dataset.path=" in lines[0]


def test_a_hub_dataset_is_checked_only_without_a_path_and_passes_when_cached(tmp_path, monkeypatch):
    from prefrun.data.sources import check_hub_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    hub = OmegaConf.create({"name": "hh_rlhf", "hub_id": "Anthropic/hh-rlhf", "path": None})
    with pytest.raises(PrefrunError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\).*dataset\.path="):
        check_hub_dataset(hub)
    check_hub_dataset(OmegaConf.create({"name": "hh_rlhf", "hub_id": "Anthropic/hh-rlhf", "path": "hh.jsonl"}))
    prepared = tmp_path / "datasets" / "Anthropic___hh-rlhf" / "default"  # datasets' own cache of a prepared dataset
    prepared.mkdir(parents=True)
    check_hub_dataset(hub)
