"""The DPO family on pairs: each list holds K = 2 responses, the higher-scored one is chosen.

All use summed log-ratios ρ = log π_θ(y) − log π_ref(y) and the margin h = ρ_w − ρ_l, the quantities of
Eq. 7 of Rafailov et al. 2023 (arXiv 2305.18290).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefrun.objectives.checks import smoothing_below_half
from prefrun.objectives.common import chosen_rejected, core_metrics, log_ratios
from prefrun.objectives.registry import ObjectiveOutput, register


@register("dpo", data="pairwise", needs_reference=True)
def dpo(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.1) -> ObjectiveOutput:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290): L = −log σ(β·h), h = ρ_w − ρ_l (summed log-ratios).

    Equals TRL ``DPOTrainer(loss_type="sigmoid")``.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    loss = -F.logsigmoid(beta * (rho_w - rho_l)).mean()
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


@register("ipo", data="pairwise", needs_reference=True)
def ipo(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.1) -> ObjectiveOutput:
    """IPO (Azar et al. 2023, arXiv 2310.12036): L = (h̄ − 1/(2τ))², τ = ``beta``.

    h̄ uses per-token-averaged log-ratios ρ/|y|, as TRL ``loss_type="ipo"`` does (confirmed with the
    IPO authors per TRL); without it the squared loss grows with response length.
    """
    rho = (policy_logps - ref_logps) / lengths.clamp(min=1)
    rho_w, rho_l = chosen_rejected(rho, scores, mask)
    loss = ((rho_w - rho_l) - 1 / (2 * beta)).pow(2).mean()
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


@register("hinge", data="pairwise", needs_reference=True)
def hinge(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.1) -> ObjectiveOutput:
    """RSO's hinge-norm (Liu et al. 2023, arXiv 2309.06657): L = max(0, 1 − β·h); 1/β is the margin on h.

    Equals TRL ``loss_type="hinge"`` (uses the reference; the reference-free SLiC is ``slic``).
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    loss = torch.relu(1 - beta * (rho_w - rho_l)).mean()
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


@register("robust", data="pairwise", needs_reference=True, validate=smoothing_below_half("robust"))
def robust(
    policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.1, label_smoothing: float = 0.1
) -> ObjectiveOutput:
    """Robust DPO (Chowdhury et al. 2024, arXiv 2403.00409), ε = ``label_smoothing`` ∈ [0, 0.5):

    L = [(1−ε)·(−log σ(βh)) − ε·(−log σ(−βh))] / (1 − 2ε). Can be negative. Equals TRL ``"robust"``.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    z = beta * (rho_w - rho_l)
    eps = label_smoothing
    loss = (((1 - eps) * -F.logsigmoid(z)) - eps * -F.logsigmoid(-z)) / (1 - 2 * eps)
    return ObjectiveOutput(loss.mean(), core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))
