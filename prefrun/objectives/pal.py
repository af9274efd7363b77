"""PAL's losses (Chen, Chen, Rege, Wang, Vinayak; ICLR 2025, arXiv 2406.08469): user-conditioned reward models.

The rewards [B, K] are each row's user's r_u(x, y) from the PAL head (``prefrun.models.pal``: a frozen
backbone's embeddings, a projector f, K_p prototypes and per-user mixture weights w_u = softmax(W_u));
``ideal_norms`` [B] is ‖a_u‖ of each row's user point, which the head supplies. With r_w, r_l the
chosen and rejected entries of each pair and Δ = r_w − r_l:

    hinge      L = mean_b max(0, m − Δ)              PAL-A's loss on the distance difference d_l − d_w
    logistic   L = mean_b −log σ(Δ)                  PAL-B's cross-entropy over [r_w, r_l] (the BT loss)
    bound      + λ · Σ_b max(0, ‖a_u‖ − c)          the reference code's ProtoBoundLossFunction (summed
                                                     over the batch, as there; c = 23 for PAL-A, 4 for PAL-B)

The model's hyperparameters are keys of the same YAML (the registry's keyword-only parameters): the PAL
head reads ``user_point``, ``similarity``, ``prototypes``, ``dim``, ``layers``, ``activation``, and
the PAL trainer ``lr`` (projectors, prototypes, logit scale) and ``user_lr`` (the user table W), as the
reference's optimiser groups (projectors 1e-4, W and P 5e-3 for a 350M-parameter backbone; larger
defaults here for a small head on a tiny one). They do not enter the loss.

With ``prototypes`` = 1, no bound (λ = 0) and the logistic loss, ``pal_b`` is ``bt`` on the PAL head's
single reward (every user's mixture is [1]): tests/objectives/test_pal.py shows it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from prefrun.errors import PrefrunError
from prefrun.objectives.checks import hparam, require
from prefrun.objectives.common import chosen_rejected
from prefrun.objectives.registry import ObjectiveOutput, register
from prefrun.objectives.reward_models import reward_metrics

LOSSES = ("hinge", "logistic")
USER_INPUT = "ideal_norms"  # what a user-conditioned objective asks the model for: only a PAL head gives it


def is_user_conditioned(objective: Any) -> bool:
    """Whether the objective trains a PAL head (its registration asks for the head's ``ideal_norms``)."""
    return USER_INPUT in objective.spec.inputs


def pal_loss(
    rewards: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    ideal_norms: torch.Tensor,
    *,
    loss: str,
    hinge_margin: float,
    bound: float,
    bound_weight: float,
) -> ObjectiveOutput:
    """The loss of the module docstring on [B, K] rewards (the best and the worst entry of each list)."""
    r_w, r_l = chosen_rejected(rewards, scores, mask)
    delta = r_w - r_l
    main = torch.clamp(hinge_margin - delta, min=0).mean() if loss == "hinge" else -F.logsigmoid(delta).mean()
    excess = torch.clamp(ideal_norms - bound, min=0).sum()
    metrics = reward_metrics(rewards, scores, mask)
    metrics["pal/ideal_norm"] = ideal_norms.detach().float().mean().item()
    return ObjectiveOutput(main + bound_weight * excess if bound_weight else main, metrics)


def _validator(name: str, user_point: str, other: str):
    def check(hp: dict[str, object]) -> None:
        from prefrun.models.pal import ACTIVATIONS, SIMILARITIES

        if hp["user_point"] != user_point:
            raise PrefrunError(
                f"objective.user_point={hp['user_point']!r}: {name} places the user by {user_point!r}; "
                f"for the other user model use objective={other}"
            )
        for key, choices in (("similarity", SIMILARITIES), ("activation", ACTIVATIONS), ("loss", LOSSES)):
            if hp[key] not in choices:
                raise PrefrunError(f"objective.{key}={hp[key]!r} must be one of {', '.join(choices)}")
        for key, low, example in (("prototypes", 1, 2), ("dim", 1, 64), ("layers", 0, 1)):
            value = hp[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PrefrunError(
                    f"objective.{key}={value!r} must be an integer ≥ {low}; e.g. objective.{key}={example}"
                )
        for key, rule, fix in (
            ("hinge_margin", "it must be > 0", "try 1.0"),
            ("bound", "it must be > 0 (the bound on ‖a_u‖)", "try 4.0"),
            ("lr", "it must be > 0", "try 1e-3"),
        ):
            v = hparam(hp, key)
            require(v > 0, name, key, v, rule, fix)
        for key in ("bound_weight", "user_lr"):
            v = hparam(hp, key)
            require(v >= 0, name, key, v, "it must be ≥ 0", "try 0 to switch it off")

    return check


@register(
    "pal_a",
    data="pairwise",
    needs_reference=False,
    validate=_validator("pal_a", "ideal", "pal_b"),
    trains="reward_model",
)
def pal_a(
    rewards,
    scores,
    mask,
    ideal_norms,
    *,
    user_point: str = "ideal",
    similarity: str = "distance",
    prototypes: int = 2,
    dim: int = 64,
    layers: int = 1,
    activation: str = "relu",
    loss: str = "hinge",
    hinge_margin: float = 1.0,
    bound: float = 23.0,
    bound_weight: float = 1.0,
    lr: float = 1e-3,
    user_lr: float = 5e-3,
) -> ObjectiveOutput:
    """PAL-A, the ideal-point mixture model (arXiv 2406.08469, section 3.1; reference code
    ``src/pal_rm_a``, "f(Pw)" user learner, "dist" preference learner): user u's ideal point
    a_u = f(Σ_k w_uk p_k), r_u(x, y) = −‖f(h(x, y)) − a_u‖₂, and the hinge loss max(0, m − (d_l − d_w))
    with the prototype-norm bound (see the module docstring; the paper's equation numbers were not checked).
    """
    return pal_loss(
        rewards, scores, mask, ideal_norms, loss=loss, hinge_margin=hinge_margin, bound=bound, bound_weight=bound_weight
    )


@register(
    "pal_b",
    data="pairwise",
    needs_reference=False,
    validate=_validator("pal_b", "prompt", "pal_a"),
    trains="reward_model",
)
def pal_b(
    rewards,
    scores,
    mask,
    ideal_norms,
    *,
    user_point: str = "prompt",
    similarity: str = "cosine",
    prototypes: int = 2,
    dim: int = 64,
    layers: int = 1,
    activation: str = "gelu",
    loss: str = "logistic",
    hinge_margin: float = 1.0,
    bound: float = 4.0,
    bound_weight: float = 1.0,
    lr: float = 1e-3,
    user_lr: float = 5e-3,
) -> ObjectiveOutput:
    """PAL-B, the prompt-conditioned mixture (arXiv 2406.08469, section 3.2; reference code ``src/pal_rm_b``,
    "angle" preference learner): a_u(x) = Σ_k w_uk g_k(h(x)), r_u(x, y) = min(e^s, 100) · cos(f(h(x, y)),
    a_u(x)), and the cross-entropy over [r_w, r_l], i.e. −log σ(r_w − r_l), plus the bound (module docstring;
    the paper's equation numbers were not checked).
    """
    return pal_loss(
        rewards, scores, mask, ideal_norms, loss=loss, hinge_margin=hinge_margin, bound=bound, bound_weight=bound_weight
    )
