"""Diffusion models of a run: the tiny pixel UNet, the Stable Diffusion presets' parts, LoRA, saving.

``model=tiny_unet``: a diffusers ``UNet2DModel`` sized for CPU (16×16, 1 channel, channels (16, 32), one
ResNet layer per block, no attention: measured ≈ 0.12 s per Diffusion-DPO step of 8 pairs on one core),
with a class embedding when the dataset names classes (the prompt analogue).

``model=sd15`` / ``model=sdxl``: the U-Net, VAE, text encoder(s), tokenizer(s) and noise scheduler of the
hub pipeline, resolved by ``component_specs`` (class, repository, subfolder) and loaded by
``load_components``, with LoRA through peft on the attention projections as in the diffusers example.
Training runs in latent space (prefrun.diffusion.latent): pairs encoded once by the frozen VAE and text encoders.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefrun.errors import PrefrunError

MODEL_DIR = "model"
SCHEDULER_FILE = "scheduler_config.json"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def is_latent(model_cfg: Any) -> bool:
    return str(model_cfg.get("kind", "pixel")) == "latent"


def tiny_unet(model_cfg: Any, num_classes: int) -> Any:
    """A fresh ``UNet2DModel`` from the model group's sizes (seeded by ``model.init_seed``)."""
    import torch
    from diffusers import UNet2DModel

    channels = tuple(int(c) for c in model_cfg.block_out_channels)
    torch.manual_seed(int(model_cfg.get("init_seed", 0)))
    return UNet2DModel(
        sample_size=int(model_cfg.sample_size),
        in_channels=int(model_cfg.in_channels),
        out_channels=int(model_cfg.in_channels),
        block_out_channels=channels,
        layers_per_block=int(model_cfg.layers_per_block),
        down_block_types=("DownBlock2D",) * len(channels),
        up_block_types=("UpBlock2D",) * len(channels),
        add_attention=False,  # attention is the slow part on CPU (2–4.5 s a step) and 16×16 blobs need none
        norm_num_groups=int(model_cfg.norm_num_groups),
        num_class_embeds=num_classes or None,
    )


def noise_scheduler(settings: Any, prediction_type: str = "epsilon") -> Any:
    """The DDPM training schedule (``diffusion.scheduler``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=int(settings.num_train_timesteps),
        beta_schedule=str(settings.beta_schedule),
        prediction_type=prediction_type,
        clip_sample=False,
    )


# --- Stable Diffusion presets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    """One part of a hub pipeline: its name, its class (``module:Class``), the repository and subfolder."""

    name: str
    cls: str
    repo: str
    subfolder: str | None


def component_specs(model_cfg: Any) -> list[Component]:
    """The parts a latent preset loads, in order; SDXL adds the second text encoder (and an optional VAE)."""
    repo = str(model_cfg.path)
    pipeline = str(model_cfg.pipeline)
    if pipeline not in ("sd15", "sdxl"):
        raise PrefrunError(f"model.pipeline={pipeline} is not one of sd15 | sdxl")
    vae = model_cfg.get("vae_path")
    parts = [
        Component("unet", "diffusers:UNet2DConditionModel", repo, "unet"),
        Component("vae", "diffusers:AutoencoderKL", str(vae) if vae else repo, None if vae else "vae"),
        Component("text_encoder", "transformers:CLIPTextModel", repo, "text_encoder"),
        Component("tokenizer", "transformers:CLIPTokenizer", repo, "tokenizer"),
        Component("scheduler", "diffusers:DDPMScheduler", repo, "scheduler"),
    ]
    if pipeline == "sdxl":
        parts.insert(3, Component("text_encoder_2", "transformers:CLIPTextModelWithProjection", repo, "text_encoder_2"))
        parts.insert(5, Component("tokenizer_2", "transformers:CLIPTokenizer", repo, "tokenizer_2"))
    return parts


def _resolve(spec: str) -> Any:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def check_components_available(model_cfg: Any) -> None:
    """Every repository a latent preset reads is cached or downloadable: one line naming the first that is not."""
    from prefrun.models.loading import check_model_available

    seen = set()
    for part in component_specs(model_cfg):
        if part.repo not in seen:
            seen.add(part.repo)
            field = "model.vae_path" if part.repo != str(model_cfg.path) else "model"
            check_model_available(
                {"name": model_cfg.name, "path": part.repo, "revision": model_cfg.get("revision")}, field
            )


def load_components(model_cfg: Any) -> dict[str, Any]:
    """The preset's parts by name, each from ``cls.from_pretrained(repo, subfolder=..., revision=...)``.

    The VAE and text encoders are frozen; the U-Net gets the LoRA adapter of ``model.lora`` when
    ``model.peft=lora`` (its reference is then the same U-Net with the adapter turned off).
    """
    check_components_available(model_cfg)
    parts = {}
    for part in component_specs(model_cfg):
        kwargs: dict[str, Any] = {"revision": model_cfg.get("revision")}
        if part.subfolder:
            kwargs["subfolder"] = part.subfolder
        parts[part.name] = _resolve(part.cls).from_pretrained(part.repo, **kwargs)
    for name in ("vae", "text_encoder", "text_encoder_2"):
        if name in parts and hasattr(parts[name], "requires_grad_"):
            parts[name].requires_grad_(False)
    if model_cfg.get("peft") == "lora":
        parts["unet"] = add_lora(parts["unet"], model_cfg.lora)
    return parts


# --- LoRA ----------------------------------------------------------------------------------------------------
def lora_config(lora_cfg: Any) -> Any:
    from peft import LoraConfig

    targets = lora_cfg.target_modules
    return LoraConfig(
        r=int(lora_cfg.r),
        lora_alpha=float(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.get("dropout", 0.0)),
        init_lora_weights="gaussian",  # as the diffusers example: B = 0, so the adapter starts as the identity
        target_modules=list(targets) if not isinstance(targets, str) else targets,
    )


def add_lora(unet: Any, lora_cfg: Any) -> Any:
    """``unet`` with a LoRA adapter, base weights frozen (diffusers' ``add_adapter`` where the class has it)."""
    unet.requires_grad_(False)
    config = lora_config(lora_cfg)
    if hasattr(unet, "add_adapter"):
        unet.add_adapter(config)
    else:  # UNet2DModel has no PeftAdapterMixin: inject the same layers with peft directly
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, unet)
    unet.prefrun_lora = config
    return unet


def has_lora(unet: Any) -> bool:
    return getattr(unet, "prefrun_lora", None) is not None


def set_adapters(unet: Any, enabled: bool) -> None:
    """Turn the LoRA layers on or off: off, the U-Net is its base, i.e. the reference."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in unet.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)


# --- saving and loading ---------------------------------------------------------------------------------------
def save_unet(
    unet: Any, scheduler: Any, run_dir: Path, reference: str | None = None, base_subfolder: str | None = None
) -> Path:
    """The trained U-Net (its LoRA adapter alone under peft, naming its base: ``reference``, and the base's
    subfolder in a pipeline repository) into ``run_dir/model``, atomically."""
    dest = Path(run_dir) / MODEL_DIR
    tmp = Path(run_dir) / f".{MODEL_DIR}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if has_lora(unet):
            from peft.utils import get_peft_model_state_dict
            from safetensors.torch import save_file

            tmp.mkdir(parents=True)
            save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}, tmp / ADAPTER_FILE)
            config = unet.prefrun_lora.to_dict()
            config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
            meta = {**config, "base_model": reference, "base_subfolder": base_subfolder}
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2, default=str))
        else:
            unet.save_pretrained(tmp, safe_serialization=True)
        scheduler.save_config(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_unet(path: str | os.PathLike, subfolder: str | None = None) -> Any:
    """A U-Net saved by ``save_unet`` or by the reference cache (a LoRA adapter loads onto its base), or a
    pipeline's (``subfolder="unet"``): its class (UNet2DModel, UNet2DConditionModel) read from its config."""
    import diffusers
    from diffusers import UNet2DModel

    if subfolder is not None:
        config = UNet2DModel.load_config(str(path), subfolder=subfolder)
        return getattr(diffusers, config["_class_name"]).from_pretrained(str(path), subfolder=subfolder)
    path = Path(path)
    if (path / ADAPTER_CONFIG).is_file():
        from omegaconf import OmegaConf
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        config = json.loads((path / ADAPTER_CONFIG).read_text())
        unet = load_unet(config["base_model"], config.get("base_subfolder"))
        lora = OmegaConf.create(
            {"r": config["r"], "alpha": config["lora_alpha"], "target_modules": config["target_modules"]}
        )
        add_lora(unet, lora)
        set_peft_model_state_dict(unet, load_file(path / ADAPTER_FILE))
        return unet
    class_name = json.loads((path / "config.json").read_text()).get("_class_name", "UNet2DModel")
    return getattr(diffusers, class_name).from_pretrained(path)
