"""Objectives by name: each one a pure function of [B, K] tensors, registered with what it needs.

An objective declares its data shape, whether it needs a reference model and what it trains (``trains``:
a policy, from log-probs, or a reward model, from scalar rewards); the task and the trainer read that
metadata and never branch on an objective's name.

    policy objectives:        fn(policy_logps, ref_logps, scores, mask, lengths, *extra, **hparams)
    reward-model objectives:  fn(rewards, scores, mask, *extra, **hparams)        all [B, K]
    diffusion objectives:     the policy signature, log-probs = minus denoising errors (objectives/diffusion.py)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from prefrun.errors import PrefrunError

DataShape = Literal["pairwise", "list", "unpaired"]
Trains = Literal["policy", "reward_model", "diffusion"]
POSITIONAL = {"policy": 5, "reward_model": 3, "diffusion": 5}  # the arguments every objective of the kind takes


@dataclass
class ObjectiveOutput:
    """What every objective returns: a scalar loss to minimise and float metrics to log."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: its function and what the trainer must feed it."""

    name: str
    fn: Callable[..., ObjectiveOutput]
    data: DataShape
    needs_reference: bool
    min_k: int
    defaults: dict[str, object]
    validate: Callable[[dict[str, object]], None] | None = None
    inputs: tuple[str, ...] = ()  # extra per-batch inputs the trainer supplies (labels, kl_logratios, ...)
    joint: bool = False  # log-probs of the whole sequence (prompt + response), not of the response alone
    advise: Callable[[list[dict], dict[str, object]], str | None] | None = None  # a warning about data + hparams
    trains: Trains = "policy"  # what the loss trains: a policy (log-probs) or a reward model (scalar rewards)


_REGISTRY: dict[str, ObjectiveSpec] = {}


def register(
    name: str,
    *,
    data: DataShape,
    needs_reference: bool,
    min_k: int | None = None,
    validate: Callable[[dict[str, object]], None] | None = None,
    joint: bool = False,
    advise: Callable[[list[dict], dict[str, object]], str | None] | None = None,
    trains: Trains = "policy",
) -> Callable[[Callable[..., ObjectiveOutput]], Callable[..., ObjectiveOutput]]:
    """Register ``fn`` under ``name``. Its keyword-only parameters are its hyperparameters.

    ``joint``: the trainer scores the prompt tokens too, so log-probs are of (x, y) jointly (DOVE).
    ``advise(records, hparams)``: a warning for hyperparameters that suit the training data poorly (logged).
    ``trains="reward_model"``: ``fn(rewards, scores, mask, *extra, **hparams)`` trains a scalar reward model.
    """

    def decorator(fn: Callable[..., ObjectiveOutput]) -> Callable[..., ObjectiveOutput]:
        if name in _REGISTRY:
            raise RuntimeError(f"objective {name!r} registered twice")
        params = list(inspect.signature(fn).parameters.values())
        defaults = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        # Positional parameters after the fixed ones (policy_logps, ref_logps, scores, mask, lengths for a policy;
        # rewards, scores, mask for a reward model) are extra inputs.
        inputs = tuple(
            p.name for p in params[POSITIONAL[trains] :] if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        k = min_k if min_k is not None else {"pairwise": 2, "list": 2, "unpaired": 1}[data]
        _REGISTRY[name] = ObjectiveSpec(
            name, fn, data, needs_reference, k, defaults, validate, inputs, joint, advise, trains
        )
        return fn

    return decorator


class Objective:
    """An objective bound to its hyperparameters: ``obj(policy_logps, ref_logps, scores, mask=, lengths=)``."""

    def __init__(self, spec: ObjectiveSpec, hparams: dict[str, object]):
        self.spec = spec
        self.hparams = hparams

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def needs_reference(self) -> bool:
        return self.spec.needs_reference

    @property
    def trains(self) -> Trains:
        return self.spec.trains

    def reward_loss(
        self, rewards: torch.Tensor, scores: torch.Tensor, *, mask: torch.Tensor | None = None, **extra: torch.Tensor
    ) -> ObjectiveOutput:
        """A reward-model objective on [B, K] rewards r(x, y_k) and their labels ``scores`` (higher is better)."""
        if self.trains != "reward_model":
            raise ValueError(f"objective {self.name!r} trains a policy: call it with log-probs")
        if mask is None:
            mask = torch.ones_like(scores, dtype=torch.bool)
        return self.spec.fn(rewards, scores, mask, **extra, **self.hparams)

    def __call__(
        self,
        policy_logps: torch.Tensor,
        ref_logps: torch.Tensor | None,
        scores: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        **extra: torch.Tensor,
    ) -> ObjectiveOutput:
        if self.trains == "reward_model":  # a diffusion objective takes the policy's signature (−ℓ as log-probs)
            raise ValueError(f"objective {self.name!r} trains a reward model: call reward_loss(rewards, scores)")
        if mask is None:
            mask = torch.ones_like(scores, dtype=torch.bool)
        if lengths is None:
            lengths = torch.ones_like(policy_logps)
        if ref_logps is None:
            if self.needs_reference:
                raise ValueError(f"objective {self.name!r} needs reference log-probs")
            ref_logps = torch.zeros_like(policy_logps)
        return self.spec.fn(policy_logps, ref_logps, scores, mask, lengths, **extra, **self.hparams)

    def __repr__(self) -> str:
        return f"Objective({self.name!r}, {self.hparams})"


def available_objectives(trains: Trains | None = "policy") -> list[str]:
    """Names of the registered objectives that train ``trains`` (policies by default; None: all), sorted."""
    return sorted(name for name, spec in _REGISTRY.items() if trains is None or spec.trains == trains)


def get_spec(name: str) -> ObjectiveSpec:
    """The registered spec for ``name``; a one-line error listing the choices otherwise."""
    if name not in _REGISTRY:
        raise PrefrunError(f"unknown objective {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_objective(name: str, **hparams: object) -> Objective:
    """Build objective ``name`` with keyword hyperparameters named as in conf/objective/<name>.yaml."""
    spec = get_spec(name)
    unknown = set(hparams) - set(spec.defaults)
    if unknown:
        raise PrefrunError(
            f"objective {name!r} has no hyperparameter {sorted(unknown)[0]!r}; "
            f"it takes: {', '.join(sorted(spec.defaults)) or '(none)'}"
        )
    bound = {**spec.defaults, **hparams}
    for key, default in spec.defaults.items():
        if isinstance(default, float | int) and not isinstance(default, bool):
            try:
                bound[key] = type(default)(bound[key]) if isinstance(default, float) else bound[key]
                float(bound[key])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise PrefrunError(
                    f"objective.{key}={bound[key]!r} is not a number; give a number like {default}"
                ) from None
    if "beta" in bound and not float(bound["beta"]) > 0:  # type: ignore[arg-type]
        raise PrefrunError(f"objective.beta={bound['beta']} must be > 0; set objective.beta=0.1 for example")
    if spec.validate is not None:
        spec.validate(bound)
    return Objective(spec, bound)
