"""Saved policies: model/ in the run directory, written whole or not at all, and loadable as a model preset."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.models.loading import base_model_path, load_model, load_tokenizer
from prefrun.models.saving import save_policy

MODEL_CFG = OmegaConf.create({"name": "tiny", "builtin": True, "path": None, "dtype": "float32"})


def fake_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    return run_dir


def logits(model, ids=((3, 4, 5, 6),)):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits


def test_full_weights_round_trip_through_model_path(micro_model, tmp_path):
    model, tokenizer = micro_model
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # not the weights the preset would build
    run_dir = fake_run(tmp_path)
    dest = save_policy(model, tokenizer, run_dir)
    assert dest == run_dir / "model" and list(dest.glob("*.safetensors")) and (dest / "tokenizer.json").exists()
    for given in (run_dir, run_dir / "model"):  # the run directory or its model/ folder
        path = base_model_path(OmegaConf.merge(MODEL_CFG, {"path": str(given)}), [], tmp_path / "cache")
        assert path == str(dest)
    loaded = load_model(str(dest), MODEL_CFG, "cpu")
    assert torch.equal(logits(loaded), logits(model))
    assert load_tokenizer(str(dest), MODEL_CFG).get_vocab() == tokenizer.get_vocab()


def test_a_lora_run_saves_only_its_adapter_and_loads_merged_on_its_base(micro_model_dir, micro_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = micro_model
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    run_dir = fake_run(tmp_path)
    dest = save_policy(peft, tokenizer, run_dir)
    assert (dest / "adapter_config.json").exists() and not (dest / "model.safetensors").exists()
    base_bytes = sum(p.stat().st_size for p in micro_model_dir.glob("*.safetensors"))
    assert sum(p.stat().st_size for p in dest.glob("*.safetensors")) < base_bytes
    expected = logits(peft)
    path = base_model_path(OmegaConf.merge(MODEL_CFG, {"path": str(run_dir)}), [], tmp_path)
    loaded = load_model(path, MODEL_CFG, "cpu")
    assert torch.allclose(logits(loaded), expected, atol=1e-5)
    assert not torch.allclose(expected, logits(peft.get_base_model().__class__.from_pretrained(micro_model_dir)))


def test_a_failed_save_leaves_no_model_and_no_temporary_folder(micro_model, tmp_path):
    model, _ = micro_model

    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("No space left on device")

    run_dir = fake_run(tmp_path)
    with pytest.raises(OSError):
        save_policy(model, BrokenTokenizer(), run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
