"""The UNet presets: tiny_unet builds offline; sd15 / sdxl compose and resolve their parts' classes and hub ids
(never downloaded: from_pretrained is replaced), offline they fail in one line; LoRA's reference is the adapter
turned off; a saved UNet (or adapter) loads back to the same outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.errors import PrefrunError

CONF = str(Path(__file__).resolve().parents[2] / "prefrun" / "conf")


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("config", overrides=["task=diffusion", *overrides])


def test_task_diffusion_defaults_to_dpo_on_blobs_with_the_tiny_unet_and_keeps_the_users_choices():
    cfg = _compose()
    assert (cfg.task.name, cfg.objective.name, cfg.dataset.name, cfg.model.name) == (
        "diffusion",
        "diffusion_dpo",
        "blobs",
        "tiny_unet",
    )
    cfg = _compose("objective=mapo", "model=sdxl", "dataset=pickapic")
    assert (cfg.objective.name, cfg.model.name, cfg.dataset.name) == ("mapo", "sdxl", "pickapic")
    assert cfg.objective.num_train_timesteps == cfg.diffusion.scheduler.num_train_timesteps == 1000


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            "sd15",
            [
                ("unet", "diffusers:UNet2DConditionModel", "stable-diffusion-v1-5/stable-diffusion-v1-5", "unet"),
                ("vae", "diffusers:AutoencoderKL", "stable-diffusion-v1-5/stable-diffusion-v1-5", "vae"),
                (
                    "text_encoder",
                    "transformers:CLIPTextModel",
                    "stable-diffusion-v1-5/stable-diffusion-v1-5",
                    "text_encoder",
                ),
                ("tokenizer", "transformers:CLIPTokenizer", "stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer"),
                ("scheduler", "diffusers:DDPMScheduler", "stable-diffusion-v1-5/stable-diffusion-v1-5", "scheduler"),
            ],
        ),
        (
            "sdxl",
            [
                ("unet", "diffusers:UNet2DConditionModel", "stabilityai/stable-diffusion-xl-base-1.0", "unet"),
                ("vae", "diffusers:AutoencoderKL", "madebyollin/sdxl-vae-fp16-fix", None),
                (
                    "text_encoder",
                    "transformers:CLIPTextModel",
                    "stabilityai/stable-diffusion-xl-base-1.0",
                    "text_encoder",
                ),
                (
                    "text_encoder_2",
                    "transformers:CLIPTextModelWithProjection",
                    "stabilityai/stable-diffusion-xl-base-1.0",
                    "text_encoder_2",
                ),
                ("tokenizer", "transformers:CLIPTokenizer", "stabilityai/stable-diffusion-xl-base-1.0", "tokenizer"),
                (
                    "tokenizer_2",
                    "transformers:CLIPTokenizer",
                    "stabilityai/stable-diffusion-xl-base-1.0",
                    "tokenizer_2",
                ),
                ("scheduler", "diffusers:DDPMScheduler", "stabilityai/stable-diffusion-xl-base-1.0", "scheduler"),
            ],
        ),
    ],
)
def test_the_sd_presets_resolve_their_parts_and_load_them_through_from_pretrained(preset, expected, monkeypatch):
    from prefrun.diffusion import models

    cfg = _compose(f"model={preset}").model
    specs = [(p.name, p.cls, p.repo, p.subfolder) for p in models.component_specs(cfg)]
    assert specs == expected
    calls = []

    class Fake:
        def __init__(self, cls, repo, kwargs):
            self.cls, self.repo, self.kwargs = cls, repo, kwargs

        def requires_grad_(self, flag):
            self.frozen = not flag
            return self

    def resolve(spec):
        class Loader:
            @staticmethod
            def from_pretrained(repo, **kwargs):
                calls.append((spec, repo, kwargs.get("subfolder")))
                return Fake(spec, repo, kwargs)

        return Loader

    monkeypatch.setattr(models, "_resolve", resolve)
    monkeypatch.setattr(models, "check_components_available", lambda cfg: None)
    monkeypatch.setattr(models, "add_lora", lambda unet, lora: setattr(unet, "lora", dict(lora)) or unet)
    parts = models.load_components(cfg)
    assert calls == [(cls, repo, sub) for _, cls, repo, sub in expected]
    assert parts["vae"].frozen and parts["text_encoder"].frozen and parts["unet"].lora["r"] == 4
    assert parts["unet"].lora["target_modules"] == ["to_k", "to_q", "to_v", "to_out.0"]
    # the classes named exist in the installed libraries (their lazy modules list them without importing them)
    for _, cls, _, _ in expected:
        module, _, name = cls.partition(":")
        assert name in dir(__import__(module))


def test_an_sd_preset_offline_and_not_cached_is_one_line(monkeypatch, tmp_path):
    from prefrun.diffusion.models import check_components_available

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PrefrunError) as e:
        check_components_available(_compose("model=sd15").model)
    message = str(e.value)
    assert "\n" not in message and "stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in message


def test_under_lora_the_reference_is_the_adapter_turned_off(unet_and_scheduler):
    from prefrun.diffusion.models import add_lora, set_adapters

    base, _ = unet_and_scheduler
    unet = add_lora(copy.deepcopy(base), OmegaConf.create({"r": 2, "alpha": 2, "target_modules": ["conv1", "conv2"]}))
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.fill_(0.05)
    x, t, c = torch.randn(2, 1, 8, 8), torch.tensor([10, 500]), torch.tensor([0, 1])
    with torch.no_grad():
        reference = base(x, t, class_labels=c).sample
        on = unet(x, t, class_labels=c).sample
        set_adapters(unet, False)
        off = unet(x, t, class_labels=c).sample
        set_adapters(unet, True)
    assert not torch.allclose(on, reference) and torch.allclose(off, reference, atol=1e-6)


def test_a_saved_unet_and_a_saved_adapter_load_back(unet_and_scheduler, tmp_path):
    from prefrun.diffusion.models import add_lora, load_unet, save_unet

    base, scheduler = unet_and_scheduler
    x, t, c = torch.randn(2, 1, 8, 8), torch.tensor([10, 500]), torch.tensor([0, 1])
    full = save_unet(base, scheduler, tmp_path / "full")
    assert (full / "scheduler_config.json").is_file()
    with torch.no_grad():
        assert torch.allclose(load_unet(full)(x, t, class_labels=c).sample, base(x, t, class_labels=c).sample)
    lora = add_lora(copy.deepcopy(base), OmegaConf.create({"r": 2, "alpha": 2, "target_modules": ["conv1"]}))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.02)
    adapter = save_unet(lora, scheduler, tmp_path / "lora", reference=str(full))
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "config.json").exists()
    with torch.no_grad():
        again = load_unet(adapter)(x, t, class_labels=c).sample
        assert torch.allclose(again, lora(x, t, class_labels=c).sample, atol=1e-6)
