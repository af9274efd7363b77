"""The SFT stage: a cache key of what the reference depends on and nothing else, one training per key however
many runs ask at once, and nothing half-written left behind."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time

import pytest

from prefrun.trainers import ref_cache, sft_stage

CFG = {"steps": 10, "lr": 1e-3, "seed": 0}


def test_the_key_follows_the_weights_not_their_path(micro_model_dir, tmp_path):
    copy = shutil.copytree(micro_model_dir, tmp_path / "elsewhere")
    assert sft_stage.sft_cache_key(str(copy), "data", CFG) == sft_stage.sft_cache_key(str(micro_model_dir), "data", CFG)


def test_the_key_changes_with_the_library_stack_and_the_recipe(micro_model_dir, monkeypatch):
    key = sft_stage.sft_cache_key(str(micro_model_dir), "data", CFG)
    assert sft_stage.sft_cache_key(str(micro_model_dir), "other data", CFG) != key
    assert sft_stage.sft_cache_key(str(micro_model_dir), "data", {**CFG, "steps": 11}) != key
    monkeypatch.setattr(ref_cache, "stack_fingerprint", lambda: {"torch": "0.0"})
    assert sft_stage.sft_cache_key(str(micro_model_dir), "data", CFG) != key
    monkeypatch.undo()
    monkeypatch.setattr(sft_stage, "SFT_RECIPE", sft_stage.SFT_RECIPE + 1)
    assert sft_stage.sft_cache_key(str(micro_model_dir), "data", CFG) != key


def test_the_stage_says_what_it_does_shows_progress_and_logs_to_the_run(micro_model_dir, tmp_path, capsys):
    """Training: one stage line, progress lines, no raw log dicts; its log lands in metrics.jsonl as stage "sft",
    and a run served from the cache gets the same lines."""
    import json

    from prefrun.data.synthetic import SortTask, sft_records

    records = sft_records(SortTask(), 32, 3, seed=0)
    cfg = {"steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "seed": 0}
    cfg.update(max_prompt_len=64, max_response_len=64)
    key = sft_stage.sft_cache_key(str(micro_model_dir), "fp", cfg)
    first = sft_stage.run_sft(micro_model_dir, records, cfg, tmp_path / "cache", "fp", run_dir=tmp_path / "run1")
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"SFT reference: training 4 steps (cache key {key})"
    assert "[sft] step 2/4 (50%)" in out and "[sft] done: step 4/4" in out and "loss" in out
    assert "{" not in out  # transformers' printer of raw log dicts is gone

    def logged(run_dir):
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    rows = logged(tmp_path / "run1")
    assert {r["stage"] for r in rows} == {"sft"}
    assert [r["step"] for r in rows if r["kind"] == "step"] == [1, 2, 3, 4]
    assert all("loss" in r for r in rows if r["kind"] == "step")

    again = sft_stage.run_sft(micro_model_dir, records, cfg, tmp_path / "cache", "fp", run_dir=tmp_path / "run2")
    assert again == first
    assert capsys.readouterr().out == f"SFT reference: cached (key {key})\n"
    assert logged(tmp_path / "run2") == rows


def _fake_training(trained: list[str], started: threading.Event, fail: bool = False):
    """Stands in for the SFT's training: writes what an entry holds (config, log), slowly enough to overlap."""

    def train(base_model_dir, records, cfg, tmp):
        trained.append(threading.current_thread().name)
        tmp.mkdir(parents=True)
        (tmp / "model.safetensors").write_bytes(b"w")
        started.set()
        time.sleep(0.3)
        if fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        (tmp / "config.json").write_text("{}")
        (tmp / sft_stage.LOG_NAME).write_text('{"stage": "sft", "step": 1, "kind": "step", "loss": 1.0}\n')

    return train


def test_two_runs_needing_one_reference_at_once_train_it_once(tmp_path, monkeypatch):
    """The second waits for the first one's entry, says so, then uses it; both runs log the SFT's lines."""
    from prefrun.results import progress

    messages: list[tuple[str, str]] = []
    monkeypatch.setattr(
        progress, "stage_message", lambda t, s=None: messages.append((threading.current_thread().name, t))
    )
    trained, started, outs = [], threading.Event(), {}
    monkeypatch.setattr(sft_stage, "_train_sft", _fake_training(trained, started))
    cfg = {**CFG, "steps": 4}
    key = sft_stage.sft_cache_key("base", "fp", cfg)

    def run(name: str) -> None:
        outs[name] = sft_stage.run_sft("base", [], cfg, tmp_path / "cache", "fp", run_dir=tmp_path / name)

    first = threading.Thread(target=run, args=("first",), name="first")
    first.start()
    started.wait(timeout=10)
    second = threading.Thread(target=run, args=("second",), name="second")
    second.start()
    first.join(timeout=10)
    second.join(timeout=10)
    assert trained == ["first"]
    assert outs["first"] == outs["second"] == tmp_path / "cache" / f"sft-{key}"
    assert messages == [
        ("first", f"SFT reference: training 4 steps (cache key {key})"),
        ("second", f"SFT reference: waiting for another run (pid {os.getpid()}) computing key {key}"),
        ("second", f"SFT reference: cached (key {key})"),
    ]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"sft-{key}"]  # no lock, no temporary
    for name in ("first", "second"):
        assert '"stage": "sft"' in (tmp_path / name / "metrics.jsonl").read_text()


def test_a_training_that_fails_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """A full disk while saving the SFT model: the error reaches the caller, the cache holds nothing new."""
    monkeypatch.setattr(sft_stage, "_train_sft", _fake_training([], threading.Event(), fail=True))
    with pytest.raises(OSError, match="No space left"):
        sft_stage.run_sft("base", [], CFG, tmp_path / "cache", "fp")
    assert list((tmp_path / "cache").iterdir()) == []
