"""An objective from its config group: ``objective.name`` with every other key as a hyperparameter."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.objectives.registry import Objective, get_objective, get_spec

# Keys of conf/objective/*.yaml that configure the run around the loss, not hyperparameters of the function.
OBJECTIVE_META = {"name", "data", "needs_reference", "udm", "baselines"}


def build_objective(objective_cfg: Any) -> Objective:
    """The objective named by ``objective.name``, bound to its hyperparameters (validated here)."""
    hparams = {k: v for k, v in OmegaConf.to_container(objective_cfg, resolve=True).items() if k not in OBJECTIVE_META}
    objective = get_objective(objective_cfg.name, **hparams)
    spec = get_spec(objective_cfg.name)
    for key in ("data", "needs_reference"):
        if key in objective_cfg and objective_cfg[key] != getattr(spec, key):
            raise PrefrunError(
                f"objective.{key}={objective_cfg[key]} contradicts the registered {spec.name!r} "
                f"({getattr(spec, key)}); remove the override"
            )
    return objective
