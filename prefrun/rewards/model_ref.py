"""Which model a model-backed reward source loads: ``reward.model=<preset>`` or ``reward.path=<dir | hub id>``.

A preset is composed as ``model=<name>`` composes it (prefrun.models.presets); a path gets the settings
every hub model shares (conf/model/_hub.yaml). The built-in tiny preset is built (once, cached) over the
run's words, so the tiny model itself can serve as a judge on the testbed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.models.loading import base_model_path
from prefrun.models.presets import hub_defaults, model_preset, preset_names
from prefrun.rewards.base import RewardContext


@dataclass
class ModelRef:
    name: str  # for messages
    path: str  # what from_pretrained loads: a local directory or a hub id
    model_cfg: Any  # the merged model config: dtype, revision, chat_template, attn_implementation, ...


def resolve_model(cfg: Any, context: RewardContext, source: str) -> ModelRef:
    """``reward.model`` (a preset) or ``reward.path`` (a local directory or hub id), with ``reward.dtype`` if set."""
    preset, path = cfg.get("model"), cfg.get("path")
    if bool(preset) == bool(path):
        problem = "both are set" if preset else "neither is set"
        raise PrefrunError(
            f"reward={source} needs one model: reward.model=<preset> ({', '.join(preset_names())}) "
            f"or reward.path=<local dir or hub id>; {problem}"
        )
    if preset:
        model_cfg = model_preset(str(preset), "reward.model")
    else:
        path = str(path)
        if (path.startswith((".", "/", "~")) or path.count("/") != 1) and not Path(path).expanduser().is_dir():
            raise PrefrunError(f"reward.path={path!r} does not exist; give a local model directory or a hub id")
        model_cfg = OmegaConf.merge(hub_defaults(), {"name": path, "path": path})
    model_cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    if cfg.get("dtype"):
        model_cfg.dtype = str(cfg.dtype)
    location = base_model_path(model_cfg, context.words, Path(context.cache_dir) / "models")
    return ModelRef(str(model_cfg.get("name") or location), location, model_cfg)
