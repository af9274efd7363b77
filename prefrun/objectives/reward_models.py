"""Reward-model objectives: losses of scalar rewards r(x, y) [B, K], registered with ``trains="reward_model"``.

Arguments, all [B, K]:

- ``rewards``: the reward model's output r_θ(x, y_k) for each list entry (one forward over the B·K sequences);
- ``scores``: the labels ψ, higher is better (a pair is [1, 0]); ties are allowed;
- ``mask``: bool, True for real list entries (padded entries may hold anything and get no gradient).

``bt`` reads each list's best entry against its worst (a pair is a list of two: the data layer turns lists
into pairs by ``dataset.pairs``); ``pl_rm`` reads the whole ranked list. With K = 2, untied scores and no
margin or centering, the two are the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefrun.objectives.checks import hparam, require
from prefrun.objectives.common import chosen_rejected, masked_mean
from prefrun.objectives.listwise import listmle
from prefrun.objectives.registry import ObjectiveOutput, register


def reward_metrics(rewards: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """What every reward-model objective logs: the best (chosen) and worst (rejected) entries' rewards of each
    list, their margin and how often the chosen one scores higher, under the names policy runs use."""
    with torch.no_grad():
        r_w, r_l = chosen_rejected(rewards.float(), scores, mask)
        real = rewards.float()[mask]
        return {
            "rewards/chosen": r_w.mean().item(),
            "rewards/rejected": r_l.mean().item(),
            "rewards/margins": (r_w - r_l).mean().item(),
            "rewards/accuracies": (r_w > r_l).float().mean().item(),
            "rewards/mean": real.mean().item(),
            "rewards/std": real.std().item() if real.numel() > 1 else 0.0,
        }


def _check_bt(hp: dict[str, object]) -> None:
    c = hparam(hp, "center_rewards_coefficient")
    require(c >= 0, "bt", "center_rewards_coefficient", c, "it must be >= 0", "try 0.01 (TRL's advice), or 0 for none")
    m = hparam(hp, "margin_scale")
    require(m >= 0, "bt", "margin_scale", m, "it must be >= 0", "try 1.0, or 0 for no margin")


@register("bt", data="pairwise", needs_reference=False, validate=_check_bt, trains="reward_model")
def bt(rewards, scores, mask, *, margin_scale: float = 0.0, center_rewards_coefficient: float = 0.0) -> ObjectiveOutput:
    """Bradley–Terry reward model (Bradley & Terry 1952; Ouyang et al. 2022, arXiv 2203.02155, eq. 1), with
    TRL RewardTrainer's optional margin (Touvron et al. 2023, arXiv 2307.09288, eq. 2) and reward centering
    (Eisenstein et al. 2023, arXiv 2312.09244, eq. 2):

        L = mean_b [ −log σ(r_w − r_l − m) ] + c · mean_b (r_w + r_l)²,     m = margin_scale · (ψ_w − ψ_l)

    where w and l are each list's best and worst entry (first on ties; a pair is [w, l]) and c is
    ``center_rewards_coefficient``. ``margin_scale`` = 0 and c = 0 (the defaults) are TRL's defaults (no
    margin column, ``center_rewards_coefficient=None``).
    """
    r_w, r_l = chosen_rejected(rewards, scores, mask)
    s_w, s_l = chosen_rejected(scores.to(rewards.dtype), scores, mask)
    margin = margin_scale * (s_w - s_l)
    loss = -F.logsigmoid(r_w - r_l - margin).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * torch.mean((r_w + r_l) ** 2)
    return ObjectiveOutput(loss, reward_metrics(rewards, scores, mask))


def _check_pl(hp: dict[str, object]) -> None:
    c = hparam(hp, "center_rewards_coefficient")
    require(c >= 0, "pl_rm", "center_rewards_coefficient", c, "it must be >= 0", "try 0.01, or 0 for none")


@register("pl_rm", data="list", needs_reference=False, min_k=2, validate=_check_pl, trains="reward_model")
def pl_rm(rewards, scores, mask, *, center_rewards_coefficient: float = 0.0) -> ObjectiveOutput:
    """Plackett–Luce reward model (Plackett 1975; Luce 1959; the listwise RM of Zhu et al. 2023,
    arXiv 2301.11270, section 4) over each list of n real entries ranked by ψ:

        L = mean_b −Σ_{k=1}^{n−1} [ r_{τ_k} − logsumexp_{j ≥ k} r_{τ_j} ] + c · mean_b (2 · r̄_b)²

    τ = the entries sorted by ψ descending, stable, so tied ψ keep their list order and the earlier one counts
    as preferred (as in ``listmle``, whose likelihood this is with s = r); r̄_b is list b's mean reward, so
    the centering term is TRL's (r_w + r_l)² when n = 2. Mean over lists with n ≥ 2.
    """
    zeros = torch.zeros_like(rewards)
    loss = listmle(rewards, zeros, scores, mask, torch.ones_like(rewards), beta=1.0).loss
    if center_rewards_coefficient:
        n = mask.sum(dim=1).clamp(min=1).to(rewards.dtype)
        mean = torch.where(mask, rewards, zeros).sum(dim=1) / n
        loss = loss + center_rewards_coefficient * masked_mean((2 * mean) ** 2, mask.sum(dim=1) >= 2)
    return ObjectiveOutput(loss, reward_metrics(rewards, scores, mask))
