"""Model presets by name: conf/model/<name>.yaml composed by Hydra, exactly as ``model=<name>`` gives it.

Anything that names a model besides the run's own (PoFT baselines, a judge, a reward model's backbone)
resolves it here, so a preset means the same thing everywhere.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from prefrun.config import CONF_DIR
from prefrun.errors import PrefrunError


def preset_names() -> list[str]:
    """The selectable model presets (files starting with _ are shared parts, not presets)."""
    return sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml") if not p.stem.startswith("_"))


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside the prefrun app: its search path (and --config-dir)
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def model_preset(name: str, where: str = "model") -> DictConfig:
    """The composed config of preset ``name``; ``where`` names the setting in the error (e.g. reward.model)."""
    if name not in preset_names():
        raise PrefrunError(f"{where}={name!r} is not a model preset; available: {', '.join(preset_names())}")
    return _compose([f"model={name}"]).model


def hub_defaults() -> DictConfig:
    """The settings every hub model shares (conf/model/_hub.yaml), for a model given only by a path."""
    return _compose(["model=_hub"]).model  # name and path stay ??? until the caller sets them
