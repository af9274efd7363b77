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


def load_model_and_tokenizer(path: str, model_cfg: Any, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, model_cfg.get("dtype", "float32"))
    if device == "cpu" and dtype != torch.float32:
        dtype = torch.float32  # bf16/fp16 matmuls on CPU are slow and lossy
    kwargs = {"revision": model_cfg.get("revision")} if not model_cfg.get("builtin") else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_cfg.get("chat_template"):
        tokenizer.chat_template = model_cfg.chat_template
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=model_cfg.get("attn_implementation", "sdpa"), **kwargs
    )
    return model, tokenizer


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
