"""Objectives on unpaired binary feedback: KTO and BCO.

Each "list" holds one response (K = 1) and the extra tensor ``labels`` (bool [B, 1]) says whether it is
desirable. ρ = log π_θ(y) − log π_ref(y) is summed over response tokens and r = β·ρ. The loss is the mean
of the per-example losses over the batch's real examples, desirable and undesirable together, as TRL's
KTO and BCO trainers average (KTO: Ethayarajh et al. 2024, arXiv 2402.01306; BCO: Jung et al. 2024,
arXiv 2404.04656).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefrun.objectives.checks import hparam, require
from prefrun.objectives.common import core_metrics, masked_mean
from prefrun.objectives.registry import ObjectiveOutput, register


def _flat(t: torch.Tensor) -> torch.Tensor:
    """[B, 1] (or [B]) → [B]."""
    return t.reshape(t.shape[0])


def _mean_over(values: torch.Tensor, selected: torch.Tensor) -> float:
    """The mean of the selected values; NaN when none is selected (a batch with no example of a kind)."""
    return values[selected].mean().item() if bool(selected.any()) else float("nan")


def _unpaired_metrics(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    shift: torch.Tensor,
) -> dict[str, float]:
    """``core_metrics``' names with chosen = desirable and rejected = undesirable examples (NaN when a batch
    has none of one kind, as TRL skips them). ``rewards/accuracies`` is the implicit classifier's accuracy:
    the share of examples whose r − shift has the sign of their label."""
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta)
    with torch.no_grad():
        real, good = _flat(mask).bool(), _flat(labels).bool()
        lp = _flat(policy_logps)
        r = beta * (lp - _flat(ref_logps))
        n = _flat(lengths).to(lp.dtype)

        des, und = real & good, real & ~good
        metrics.update(
            {
                "rewards/chosen": _mean_over(r, des),
                "rewards/rejected": _mean_over(r, und),
                "logps/chosen": _mean_over(lp, des),
                "logps/rejected": _mean_over(lp, und),
                "lengths/chosen": _mean_over(n, des),
                "lengths/rejected": _mean_over(n, und),
                "rewards/accuracies": _mean_over(((r - shift) > 0).eq(good).to(lp.dtype), real),
            }
        )
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return metrics


def _check_kto(hp: dict[str, object]) -> None:
    for field in ("desirable_weight", "undesirable_weight"):
        weight = hparam(hp, field)
        require(
            weight > 0,
            "kto",
            field,
            weight,
            "the class weight must be > 0",
            "keep λ_D·n_D/(λ_U·n_U) in [1, 4/3], e.g. 1.0",
        )


def kto_weight_advice(records: list[dict], hp: dict[str, object]) -> str | None:
    """TRL KTOTrainer's balance check (KTO paper Eq. 8): with n_D desirable and n_U undesirable examples
    (n_D ≠ n_U), λ_D·n_D/(λ_U·n_U) should lie in [1, 4/3]; otherwise the ranges that put either weight
    there (not both), as TRL's warning gives them."""
    n_d = max(sum(bool(r["labels"][0]) for r in records), 1)
    n_u = max(len(records) - n_d, 1)
    if n_d == n_u:
        return None
    lam_d, lam_u = float(hp["desirable_weight"]), float(hp["undesirable_weight"])  # type: ignore[arg-type]
    d_lo, d_hi = round(n_u * lam_u / n_d, 2), round(n_u * lam_u / n_d * 1.33, 2)
    u_lo, u_hi = round(n_d * lam_d / n_u / 1.33, 2), round(n_d * lam_d / n_u, 2)
    if d_lo <= lam_d <= d_hi or u_lo <= lam_u <= u_hi:
        return None
    return (
        f"kto: {n_d} desirable vs {n_u} undesirable examples; λ_D·n_D/(λ_U·n_U) = {lam_d * n_d / (lam_u * n_u):.2f} "
        f"is outside [1, 4/3]: set objective.desirable_weight in [{d_lo}, {d_hi}] or objective.undesirable_weight "
        f"in [{u_lo}, {u_hi}] (not both)"
    )


@register("kto", data="unpaired", needs_reference=True, validate=_check_kto, advise=kto_weight_advice)
def kto(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    kl_logratios: torch.Tensor,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> ObjectiveOutput:
    """KTO (Ethayarajh et al. 2024, arXiv 2402.01306, Eq. 7), z₀ = max(0, mean(``kl_logratios``)), detached:

    L = mean over the batch of λ_D·(1 − σ(β·(ρ − z₀))) for desirable and λ_U·(1 − σ(β·(z₀ − ρ))) for
    undesirable examples; λ_D = ``desirable_weight``, λ_U = ``undesirable_weight``. Equals TRL
    ``KTOTrainer(loss_type="kto")``, including its averaging over all examples.
    Extra inputs: ``labels`` bool [B, 1] (True = desirable); ``kl_logratios`` [N] (N = B in TRL), the summed
    log π_θ − log π_ref of mismatched (prompt, completion) pairs, paired as in TRL (completions rotated by one
    within each per-device batch of a sequential order: x_i with y_(i−1), the first with the last; see
    ``with_mismatched_completion``), computed by the trainer without gradient and gathered across ranks before
    the mean. TRL warns
    unless λ_D·n_D/(λ_U·n_U) ∈ [1, 4/3]. Data: unpaired (K = 1).
    """
    z0 = kl_logratios.detach().to(policy_logps.dtype).mean().clamp(min=0)
    rho = _flat(policy_logps) - _flat(ref_logps)
    good = _flat(labels).bool()
    desirable = desirable_weight * torch.sigmoid(-beta * (rho - z0))
    undesirable = undesirable_weight * torch.sigmoid(-beta * (z0 - rho))
    loss = masked_mean(torch.where(good, desirable, undesirable), _flat(mask).bool())
    metrics = _unpaired_metrics(policy_logps, ref_logps, scores, mask, lengths, labels, beta, beta * z0)
    metrics["kl"] = z0.item()
    return ObjectiveOutput(loss, metrics)


@register("bco", data="unpaired", needs_reference=True)
def bco(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    reward_shift: torch.Tensor,
    udm_weights: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
) -> ObjectiveOutput:
    """BCO (Jung et al. 2024, "Binary Classifier Optimization", arXiv 2404.04656).

    With r = β·ρ, δ = ``reward_shift`` and w = ``udm_weights``: L = mean over the batch of −log σ(r − δ) for
    desirable and w·(−log σ(−(r − δ))) for undesirable examples (the mean over all examples, as TRL's
    ``losses.nanmean()``, not a weighted mean).
    Extra inputs: ``labels`` bool [B, 1] (True = desirable); ``reward_shift`` (scalar tensor, detached here),
    the running mean of all implicit rewards r seen in training, kept by the trainer: TRL's BCOTrainer updates
    it with this batch's rewards (gathered across ranks) before the loss in training, not in evaluation, and
    it must be saved with checkpoints; ``udm_weights`` float [B, 1] (optional; None = all 1), UDM's clamped
    density ratio p/(1 − p) of each undesirable example's prompt, computed before training by
    ``prefrun.trainers.density_ratio`` (``objective.udm.enabled=true``); desirable entries are not read.
    With weights, ``bco/udm_weight`` logs the batch's mean undesirable weight.
    TRL 1.16 has no BCOTrainer and its ``"bco_pair"`` drops δ. Data: unpaired (K = 1).
    """
    rho = _flat(policy_logps) - _flat(ref_logps)
    r = beta * rho
    delta = torch.as_tensor(reward_shift, dtype=r.dtype, device=r.device).detach().reshape(())
    good = _flat(labels).bool()
    undesirable = -F.logsigmoid(delta - r)
    if udm_weights is not None:
        weights = _flat(udm_weights).detach().to(r.dtype)
        undesirable = weights * undesirable
    per_example = torch.where(good, -F.logsigmoid(r - delta), undesirable)
    real = _flat(mask).bool()
    loss = masked_mean(per_example, real)
    metrics = _unpaired_metrics(policy_logps, ref_logps, scores, mask, lengths, labels, beta, delta)
    metrics["reward_shift"] = delta.item()
    if udm_weights is not None:
        metrics["bco/udm_weight"] = _mean_over(weights, real & ~good)
    return ObjectiveOutput(loss, metrics)
