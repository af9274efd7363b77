"""Objectives on ranked lists of K ≥ 2 responses: LiPO-λ, list-MLE, softmax cross-entropy, all-pairs DPO, PRO.

Arguments, all [B, K], in the notation of LiPO (Liu et al. 2024, arXiv 2402.01878):

- ``policy_logps``, ``ref_logps``: summed response log-probs log π(y) (``ref_logps`` is 0 for
  reference-free objectives); ρ = policy_logps − ref_logps is the log-ratio.
- ``scores``: the labels ψ, higher is better; ties are allowed.
- ``mask``: bool, True for real list entries. Lists may have different lengths within a batch;
  padded entries may hold any value (even NaN) and get no gradient.
- ``lengths``: response token counts (PRO only).

Orders: wherever responses are ranked (by ψ for list-MLE and PRO, by the current scores s for
LiPO's weights) the sort is stable and descending over real entries, so equal values keep their
order in the list.

Averages over the batch: the pair objectives (``lipo``, ``pairwise_all``) take each list's mean over
its valid pairs, then the mean over the lists that have at least one valid pair; the other list
objectives take the mean over lists with at least two real entries. A list with nothing to rank
adds nothing to the loss and does not dilute the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefrun.errors import PrefrunError
from prefrun.objectives.common import core_metrics, masked_mean, preference_pairs
from prefrun.objectives.registry import ObjectiveOutput, register

# --------------------------------------------------------------------------------------------------
# Shared pieces


def _clean(values: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``values`` with padded entries replaced by ``fill``, so padding garbage cannot reach a sum."""
    return torch.where(mask, values, torch.full_like(values, fill))


def _rank_order(keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Long [B, K]: the list positions sorted by ``keys`` descending (stable), real entries first."""
    by_key = torch.sort(_clean(keys, mask), dim=1, descending=True, stable=True).indices
    padded_last = torch.sort((~mask).gather(1, by_key).to(torch.int8), dim=1, stable=True).indices
    return by_key.gather(1, padded_last)


def _lists_with_entries(mask: torch.Tensor) -> torch.Tensor:
    """Bool [B]: the lists with at least two real entries (the ones with something to rank)."""
    return mask.sum(dim=1) >= 2


def _mean_over_pairs(pair_losses: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean of ``pair_losses`` [B, K, K] over each list's valid ``pairs``, then over lists with a pair."""
    n_pairs = pairs.sum(dim=(1, 2))
    per_list = torch.where(pairs, pair_losses, torch.zeros_like(pair_losses)).sum(dim=(1, 2))
    per_list = per_list / n_pairs.clamp(min=1).to(per_list.dtype)
    return masked_mean(per_list, n_pairs > 0)


def _pair_logistic(rho: torch.Tensor, beta: float) -> torch.Tensor:
    """[B, K, K]: −log σ(β·(ρ_i − ρ_j)) for every ordered pair (i, j), DPO's loss on that pair."""
    return -F.logsigmoid(beta * (rho[:, :, None] - rho[:, None, :]))


# --------------------------------------------------------------------------------------------------
# LiPO-λ and the all-pairs logistic loss


@register("lipo", data="list", needs_reference=True, min_k=2)
def lipo(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.05) -> ObjectiveOutput:
    """LiPO-λ (Liu et al. 2024, arXiv 2402.01878): DPO over all pairs, weighted by LambdaLoss's ΔNDCG.

    L_list = (1/P) Σ_{ψ_i > ψ_j} Δ_ij · log(1 + exp(−(s_i − s_j))),  s = β·ρ (summed log-ratios),
    Δ_ij = |G_i − G_j| · |1/D(τ_i) − 1/D(τ_j)|,  G = 2^ψ − 1,  D(r) = log(1 + r) (natural log),

    where τ is the 1-based rank of each real entry under the current scores s, descending, and
    P the number of valid pairs (tied ψ are dropped). Normalisation: each list's Δ-weighted sum is
    divided by its P (the number of pairs, not Σ Δ); the loss is the mean over lists with P ≥ 1.

    Δ is computed from detached s (ranks are not differentiable), so gradients flow only through
    the logistic term. Ties in s, e.g. every s = 0 at the first step when policy = reference, are
    ranked by list position. The gain 2^ψ explodes for raw reward-model logits: ψ must lie in a
    small range, such as win rates in [0, 1] (as in the paper and the sort task) or small grades.
    """
    rho = _clean(policy_logps - ref_logps, mask)
    psi = _clean(scores, mask)
    pairs = preference_pairs(psi, mask)
    with torch.no_grad():
        order = _rank_order(beta * rho, mask)
        positions = torch.arange(1, rho.shape[1] + 1, device=rho.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(1, order, positions).to(rho.dtype)
        gain = torch.exp2(psi.to(rho.dtype)) - 1
        inv_discount = 1 / torch.log1p(rank)
        delta = (gain[:, :, None] - gain[:, None, :]).abs() * (
            inv_discount[:, :, None] - inv_discount[:, None, :]
        ).abs()
    loss = _mean_over_pairs(delta * _pair_logistic(rho, beta), pairs)
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


@register("pairwise_all", data="list", needs_reference=True, min_k=2)
def pairwise_all(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.1) -> ObjectiveOutput:
    """DPO over all pairs, LiPO's pair-logistic (Liu et al. 2024, arXiv 2402.01878, section 2):

    L_list = (1/P) Σ_{ψ_i > ψ_j} −log σ(β·(ρ_i − ρ_j)), summed log-ratios, tied ψ dropped; the loss is
    the mean over lists with P ≥ 1 valid pairs. With K = 2 and untied scores it equals ``dpo``.
    """
    rho = _clean(policy_logps - ref_logps, mask)
    pairs = preference_pairs(_clean(scores, mask), mask)
    loss = _mean_over_pairs(_pair_logistic(rho, beta), pairs)
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


# --------------------------------------------------------------------------------------------------
# Plackett-Luce and softmax cross-entropy


def _plackett_luce(logits: torch.Tensor, temps: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Per-list Σ_k −[x_kk − logsumexp({x_kk} ∪ {x_ki : negatives_ki})], x_ki = logits_i · temps_ki.

    ``logits`` [B, K] are in rank order; ``temps`` [B, K, K] (the diagonal holds each positive's
    temperature); ``negatives`` [B, K, K] bool says which i compete with the entry at rank k. Rows
    with no negative add nothing. This is the PRO term; temps ≡ 1 with negatives {i > k} is list-MLE.
    """
    x = logits[:, None, :] * temps
    eye = torch.eye(logits.shape[1], dtype=torch.bool, device=logits.device)
    # The positive is always in its own logsumexp, so no row is all −inf (a NaN gradient otherwise).
    lse = torch.logsumexp(x.masked_fill(~(negatives | eye), float("-inf")), dim=2)
    terms = -(torch.diagonal(x, dim1=1, dim2=2) - lse)
    return torch.where(negatives.any(dim=2), terms, torch.zeros_like(terms)).sum(dim=1)


@register("listmle", data="list", needs_reference=True, min_k=2)
def listmle(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.1) -> ObjectiveOutput:
    """List-MLE / DPO-PL, the Plackett-Luce likelihood of the ranking (as in
    Liu et al. 2024, arXiv 2402.01878; Rafailov et al. 2023, arXiv 2305.18290, appendix A.3):

    L_list = −Σ_{k=1}^{n−1} [s_{τ_k} − logsumexp_{j≥k} s_{τ_j}],  s = β·ρ (summed log-ratios),

    τ = the n real entries sorted by ψ descending. Tied ψ keep their list order (stable sort), so the
    earlier one is treated as preferred. Mean over lists with n ≥ 2. With K = 2 it equals ``dpo``.
    """
    rho = _clean(policy_logps - ref_logps, mask)
    order = _rank_order(scores, mask)
    s_ranked = beta * rho.gather(1, order)
    real_ranked = mask.gather(1, order)
    k = torch.arange(rho.shape[1], device=rho.device)
    later = (k[None, :, None] < k[None, None, :]) & real_ranked[:, None, :]
    per_list = _plackett_luce(s_ranked, torch.ones_like(later, dtype=rho.dtype), later)
    loss = masked_mean(per_list, _lists_with_entries(mask))
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


@register("list_softmax", data="list", needs_reference=True, min_k=2)
def list_softmax(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.1) -> ObjectiveOutput:
    """Softmax cross-entropy (Liu et al. 2024, arXiv 2402.01878, section 2; ListNet-style):

    L_list = −Σ_i t_i · log softmax(s)_i over the real entries, s = β·ρ (summed log-ratios),
    t_i = ψ_i / Σ_j ψ_j.

    Target rule: a list whose scores are all ≥ 0 uses ψ/Σψ exactly (win rates, grades); a list with
    a negative score is first shifted by its minimum (ψ − min ψ, so its worst entry gets target 0);
    a list whose (shifted) scores sum to 0, e.g. all equal, gets the uniform target 1/n.
    Mean over lists with n ≥ 2 real entries.
    """
    rho = _clean(policy_logps - ref_logps, mask)
    s = beta * rho
    log_p = s - torch.logsumexp(s.masked_fill(~mask, float("-inf")), dim=1, keepdim=True)
    psi = _clean(scores, mask).to(s.dtype)
    lowest = _clean(psi, mask, float("inf")).amin(dim=1, keepdim=True)
    psi = _clean(psi - lowest.clamp(max=0), mask)
    total = psi.sum(dim=1, keepdim=True)
    uniform = mask.to(s.dtype) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    target = torch.where(total > 0, psi / total.clamp(min=torch.finfo(s.dtype).tiny), uniform)
    per_list = -(target * _clean(log_p, mask)).sum(dim=1)
    loss = masked_mean(per_list, _lists_with_entries(mask))
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


# --------------------------------------------------------------------------------------------------
# PRO


def _check_pro(hp: dict[str, object]) -> None:
    alpha = float(hp["sft_weight"])  # type: ignore[arg-type]
    if not alpha >= 0:
        raise PrefrunError(f"objective.sft_weight={alpha} must be >= 0 for pro (it weights an NLL term); try 0.05")


@register("pro", data="list", needs_reference=False, min_k=2, validate=_check_pro)
def pro(policy_logps, ref_logps, scores, mask, lengths, *, sft_weight: float = 0.05) -> ObjectiveOutput:
    """PRO (Song et al. 2023, arXiv 2306.17492), reference-free, n real responses ranked by ψ descending:

    s^k = log π_θ(y^k) / |y^k| (length-normalised), T_k^i = ψ^k − ψ^i (i > k), T_k^k = max_{i>k} T_k^i,
    L_list = Σ_{k=1}^{n−1} −[s^k T_k^k − logsumexp(s^k T_k^k, {s^i T_k^i}_{i>k})]
             + α·(n−1)²·(−log π_θ(y^1))   (summed log-prob of the top response), α = ``sft_weight``.

    Mean over lists with n ≥ 2. α defaults to 0.05, the value of the reference HH training script;
    the reference code's default is 2. Ties: a response tied with y^k is dropped from term k (the
    reference code keeps it with T = 0, i.e. logit 0, which, as s < 0, makes it the strongest
    negative, one the model can never beat); a term with no strictly worse response is skipped.
    Tied responses keep their list order, and the first of the top ones gets the SFT term.
    """
    logp = _clean(policy_logps, mask)
    avg_logp = logp / _clean(lengths.to(logp.dtype), mask, 1.0).clamp(min=1)
    order = _rank_order(scores, mask)
    s_ranked = avg_logp.gather(1, order)
    real_ranked = mask.gather(1, order)
    psi = _clean(scores, mask).to(logp.dtype).gather(1, order)
    k = torch.arange(logp.shape[1], device=logp.device)
    later = (k[None, :, None] < k[None, None, :]) & real_ranked[:, None, :]
    gaps = psi[:, :, None] - psi[:, None, :]  # T_k^i = ψ^k − ψ^i
    negatives = later & (gaps > 0)
    positive_temp = torch.where(later, gaps, torch.zeros_like(gaps)).amax(dim=2)
    diagonal = torch.eye(logp.shape[1], dtype=torch.bool, device=logp.device)
    temps = torch.where(diagonal, positive_temp[:, :, None], gaps)
    ranking = _plackett_luce(s_ranked, temps, negatives)
    n = mask.sum(dim=1).to(logp.dtype)
    sft = sft_weight * (n - 1).clamp(min=0) ** 2 * -logp.gather(1, order[:, :1])[:, 0]
    lists = _lists_with_entries(mask)
    loss = masked_mean(ranking + sft, lists)
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths)
    metrics["pro/ranking"] = masked_mean(ranking.detach(), lists).item()
    metrics["pro/sft"] = masked_mean(sft.detach(), lists).item()
    return ObjectiveOutput(loss, metrics)
