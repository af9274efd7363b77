"""Loading a model preset: the built-in tiny model, a hub id, or a local directory; LoRA via peft."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefrun.errors import PrefrunError


def base_model_path(model_cfg: Any, words: list[str], cache_dir: str | os.PathLike) -> str:
    """Where the base model loads from: the cached tiny model, a local directory, or a hub id."""
    if model_cfg.get("builtin"):
        from prefrun.models.tiny import tiny_model_dir

        keys = (
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "max_position_embeddings",
            "init_seed",
        )
        return str(tiny_model_dir({k: model_cfg[k] for k in keys}, words, cache_dir))
    path = str(model_cfg.path)
    looks_local = path.startswith((".", "/", "~")) or os.path.exists(path) or path.count("/") != 1
    if looks_local and not Path(path).expanduser().is_dir():
        raise PrefrunError(
            f"model.path={path!r} does not exist; give an existing local directory or a hub id like 'org/name'"
        )
    return str(Path(path).expanduser()) if looks_local else path


def model_dtype(model_cfg: Any, device: str) -> str:
    """The dtype the weights load in: the preset's, but float32 on CPU (bf16/fp16 matmuls there are slow and lossy)."""
    return "float32" if device == "cpu" else str(model_cfg.get("dtype", "float32"))


def _revision(model_cfg: Any) -> dict[str, Any]:
    return {"revision": model_cfg.get("revision")} if not model_cfg.get("builtin") else {}


def load_tokenizer(path: str, model_cfg: Any) -> Any:
    """The preset's tokenizer, with a pad token and the preset's chat template (if it sets one)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, **_revision(model_cfg))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_cfg.get("chat_template"):
        tokenizer.chat_template = model_cfg.chat_template
    return tokenizer


def load_model(path: str, model_cfg: Any, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path,
        dtype=getattr(torch, model_dtype(model_cfg, device)),
        attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
        **_revision(model_cfg),
    )


def load_model_and_tokenizer(path: str, model_cfg: Any, device: str) -> tuple[Any, Any]:
    return load_model(path, model_cfg, device), load_tokenizer(path, model_cfg)


def lora_config(model_cfg: Any) -> Any:
    """A peft LoraConfig when ``model.peft=lora``; None otherwise."""
    choice = model_cfg.get("peft")
    if choice in (None, "none", False):
        return None
    if choice != "lora":
        raise PrefrunError(f"model.peft={choice!r} is not supported; use model.peft=lora or leave it null")
    from peft import LoraConfig

    lora = model_cfg.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
