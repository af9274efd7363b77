"""Loading a model preset: the built-in tiny model, a hub id, a local directory or a finished prefrun run;
LoRA via peft.

``model.path`` may name a prefrun run directory (or its ``model/``): its saved policy loads as the model,
and a saved LoRA adapter loads onto the base model its ``adapter_config.json`` names, merged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prefrun.errors import PrefrunError

ADAPTER_CONFIG = "adapter_config.json"


def saved_policy_dir(path: str | os.PathLike) -> Path | None:
    """The policy directory of a prefrun run (``<run dir>/model`` or that folder itself), or None."""
    p = Path(path).expanduser()
    if (p / "model").is_dir() and (p / "config.yaml").is_file():
        return p / "model"
    if p.name == "model" and (p.parent / "config.yaml").is_file() and p.is_dir():
        return p
    return None


def base_model_path(model_cfg: Any, words: list[str], cache_dir: str | os.PathLike) -> str:
    """Where the model loads from: a saved run's policy, the cached tiny model, a local directory, or a hub id."""
    path = model_cfg.get("path")
    if path and saved_policy_dir(path) is not None:
        return str(saved_policy_dir(path))
    if path and (Path(str(path)).expanduser() / ADAPTER_CONFIG).is_file():
        return str(Path(str(path)).expanduser())
    if model_cfg.get("builtin") and not path:
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
    return path if hub_model_id(model_cfg) else str(Path(path).expanduser())


def hub_model_id(model_cfg: Any) -> str | None:
    """The hub id ``model.path`` names, or None when the model is local (built in, a directory, a saved run).

    A path that looks local but does not exist is a PrefrunError naming it.
    """
    path = model_cfg.get("path")
    if not path and model_cfg.get("builtin"):
        return None
    path = str(path)
    if saved_policy_dir(path) is not None or (Path(path).expanduser() / ADAPTER_CONFIG).is_file():
        return None
    looks_local = path.startswith((".", "/", "~")) or os.path.exists(path) or path.count("/") != 1
    if looks_local and not Path(path).expanduser().is_dir():
        raise PrefrunError(
            f"model.path={path!r} does not exist; give an existing local directory or a hub id like 'org/name'"
        )
    return None if looks_local else path


def check_model_available(model_cfg: Any, where: str = "model") -> None:
    """Fail in seconds, with one line, when a hub model is neither in the local cache nor downloadable.

    Without this, loading it spends a minute on HTTP retries and ends in tracebacks. ``where`` is the
    setting that names the model (model, or reward.model / reward.path for other models of a run).
    """
    repo_id = hub_model_id(model_cfg)
    if repo_id is None:
        return
    from prefrun.runtime.hub import unavailable

    reason = unavailable(repo_id, "model", model_cfg.get("revision"))
    if reason:
        name = model_cfg.get("name")
        label = f"{where} {name} ({repo_id})" if name and name != repo_id else f"{where} {repo_id}"
        raise PrefrunError(
            f"{label} {reason}; download it first (hf download {repo_id}) or point {where}.path at a local copy: "
            f"{where}.path=/path/to/{repo_id.split('/')[-1]}"
        )


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


def adapter_base(path: str) -> str | None:
    """The base model a saved LoRA adapter at ``path`` loads onto, or None when ``path`` holds full weights."""
    config = Path(path) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise PrefrunError(f"{config} names no base model (base_model_name_or_path); it cannot be loaded")
    return str(base)


def load_model(path: str, model_cfg: Any, device: str) -> Any:
    """The causal LM at ``path`` in the preset's dtype; a saved adapter is loaded onto its base and merged."""
    import torch
    from transformers import AutoModelForCausalLM

    base = adapter_base(path)
    kwargs = {
        "dtype": getattr(torch, model_dtype(model_cfg, device)),
        "attn_implementation": model_cfg.get("attn_implementation", "sdpa"),
    }
    if base is None:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs, **_revision(model_cfg))
    from peft import PeftModel

    if base.startswith((".", "/", "~")) and not Path(base).expanduser().is_dir():
        raise PrefrunError(f"the adapter at {path} needs its base model {base}, which no longer exists")
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    return PeftModel.from_pretrained(model, path).merge_and_unload()


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
