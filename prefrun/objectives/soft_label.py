"""Objectives that regress implicit rewards onto soft preference labels: SPPO (soft) and iREPO.

Both use summed log-ratios ρ = log π_θ(y) − log π_ref(y) and a reference that should be the previous
iterate, refreshed each iteration of their self-play loop (Wu et al. 2024, arXiv 2405.00675; Le et al. 2024,
arXiv 2405.15230).
"""

from __future__ import annotations

import torch

from prefrun.objectives.checks import hparam, require
from prefrun.objectives.common import best_worst_index, core_metrics
from prefrun.objectives.registry import ObjectiveOutput, register


def win_rates(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """P̂ [B, K]: P̂_i = mean over the list's real entries j (self included) of P(y_i ≻ y_j) = σ(s_i − s_j).

    Padded entries (``mask`` False) are left out of the mean; their own P̂ is meaningless.
    """
    s = scores.masked_fill(~mask, 0.0)
    pref = torch.sigmoid(s[:, :, None] - s[:, None, :])
    weight = mask[:, None, :].to(pref.dtype)
    return (pref * weight).sum(dim=2) / weight.sum(dim=2).clamp(min=1.0)


@register("sppo", data="list", needs_reference=True)
def sppo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.001,
) -> ObjectiveOutput:
    """SPPO, soft labels (Wu et al. 2024, "Self-Play Preference Optimization", arXiv 2405.00675), η = 1/β:

    L = mean ½[(ρ_w − η(P̂_w − ½))² + (ρ_l − η(P̂_l − ½))²], w = argmax score, l = argmin score of each list,
    P̂ from ``win_rates``: P(y_i ≻ y_j) = σ(s_i − s_j), averaged over the list's real entries including self
    (as uclaml/SPPO's compute_prob.py). ``scores`` are therefore read as Bradley–Terry logits (PairRM's
    scale); rescale other scores in the data. With β = 0.001 the targets reach ±500 nats: keep summed
    log-ratios. Data: list (K ≥ 2, the paper samples K = 5); no extra inputs.
    """
    p_hat = win_rates(scores, mask)
    best, worst = best_worst_index(scores, mask)
    rho = policy_logps - ref_logps

    def at(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return t.gather(1, idx[:, None])[:, 0]

    eta = 1.0 / beta
    err_w = at(rho, best) - eta * (at(p_hat, best) - 0.5)
    err_l = at(rho, worst) - eta * (at(p_hat, worst) - 0.5)
    loss = 0.5 * (err_w.pow(2) + err_l.pow(2))
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta)
    metrics["win_rate/chosen"] = at(p_hat, best).mean().item()
    metrics["win_rate/rejected"] = at(p_hat, worst).mean().item()
    return ObjectiveOutput(loss.mean(), metrics)


def _check_irepo(hp: dict[str, object]) -> None:
    clip = hparam(hp, "p_clip")
    require(
        0.0 < clip < 0.5,
        "irepo",
        "p_clip",
        clip,
        "p̂ is clipped to [p_clip, 1 − p_clip], so p_clip must be in (0, 0.5)",
        "try 0.01",
    )


@register("irepo", data="pairwise", needs_reference=True, validate=_check_irepo)
def irepo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    p_chosen: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    p_clip: float = 0.01,
) -> ObjectiveOutput:
    """iREPO (Le et al. 2024, arXiv 2405.15230): regress the implicit reward gap onto the empirical logit,

    L = mean (β·(ρ_w − ρ_l) − logit(p̂))², p̂ clipped to [``p_clip``, 1 − ``p_clip``] (p̂ ∈ {0, 1} would give
    an infinite target; with the default 0.01 the target lies in ±4.6). Summed log-ratios; the exact loss
    follows the paper's abstract [U: not checked against its full text].
    Extra input ``p_chosen`` [B] (optional): the empirical probability that w beats l, e.g. votes/M or the
    Laplace-smoothed (votes + 1)/(M + 2) — smoothing belongs to the data, this only clips. Without it,
    p̂ = σ(s_w − s_l) from the scores (Bradley–Terry logits). w is the higher-scored entry; on a score tie w is
    entry 0 and l entry 1 (so ``p_chosen`` for a tie is P(entry 0 ≻ entry 1)), and the pair still trains.
    Data: pairwise (K = 2).
    """
    if scores.shape[1] != 2:
        raise ValueError(f"irepo takes pairs (K = 2); got K = {scores.shape[1]}")
    best = scores.argmax(dim=1)  # first entry on a tie
    worst = 1 - best
    rho = policy_logps - ref_logps
    rho_w = rho.gather(1, best[:, None])[:, 0]
    rho_l = rho.gather(1, worst[:, None])[:, 0]
    if p_chosen is None:
        s_w = scores.gather(1, best[:, None])[:, 0]
        s_l = scores.gather(1, worst[:, None])[:, 0]
        p_hat = torch.sigmoid(s_w - s_l)
    else:
        p_hat = p_chosen.reshape(-1)
    p_hat = p_hat.to(rho.dtype).clamp(p_clip, 1 - p_clip)
    target = torch.log(p_hat) - torch.log1p(-p_hat)
    loss = (beta * (rho_w - rho_l) - target).pow(2)
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta)
    metrics["target_logit"] = target.mean().item()
    return ObjectiveOutput(loss.mean(), metrics)
