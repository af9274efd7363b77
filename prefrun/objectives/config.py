"""An objective from its config group: ``objective.name`` with every other key as a hyperparameter."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.objectives.registry import Objective, get_objective, get_spec

# Keys of conf/objective/*.yaml that configure the run around the loss, not hyperparameters of the function.
# score_range: [lo, hi] where an objective documents the scores it expects (the data report warns outside it).
OBJECTIVE_META = {"name", "data", "needs_reference", "trains", "udm", "baselines", "score_range"}


def build_objective(objective_cfg: Any, trains: str = "policy") -> Objective:
    """The objective named by ``objective.name``, bound to its hyperparameters (validated here).

    ``trains``: what the calling task trains (``policy`` or ``reward_model``); an objective of the other kind
    is a one-line error that names the task it belongs to.
    """
    spec = get_spec(objective_cfg.name)
    if spec.trains != trains:
        raise PrefrunError(_wrong_kind(spec.name, spec.trains, trains))
    hparams = {k: v for k, v in OmegaConf.to_container(objective_cfg, resolve=True).items() if k not in OBJECTIVE_META}
    objective = get_objective(objective_cfg.name, **hparams)
    for key in ("data", "needs_reference", "trains"):
        if key in objective_cfg and objective_cfg[key] != getattr(spec, key):
            raise PrefrunError(
                f"objective.{key}={objective_cfg[key]} contradicts the registered {spec.name!r} "
                f"({getattr(spec, key)}); remove the override"
            )
    return objective


def _wrong_kind(name: str, trains: str, wanted: str = "policy") -> str:
    from prefrun.objectives.registry import available_objectives

    if trains == "reward_model":
        return f"objective={name} trains a reward model, not a policy; run it with task=reward_model objective={name}"
    if trains == "diffusion":
        return f"objective={name} trains a diffusion model on images; run it with task=diffusion objective={name}"
    if wanted == "diffusion":
        choices = "|".join(available_objectives("diffusion"))
        return (
            f"objective={name} trains a language model; task=diffusion needs a diffusion objective: "
            f"objective=<{choices}>"
        )
    rm = "|".join(available_objectives("reward_model"))
    return f"objective={name} trains a policy; task=reward_model needs a reward-model objective: objective=<{rm}>"
