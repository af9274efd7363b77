"""The SFT cache key: what the cached reference depends on, and nothing else."""

from __future__ import annotations

import shutil

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
