"""Pairwise objectives with a reference model that TRL 1.16's ``DPOTrainer`` also has as a ``loss_type``.

Each list holds K = 2 responses; the higher-scored one is chosen (w), the other rejected (l). Log-ratios
ρ = log π_θ(y) − log π_ref(y) are summed over response tokens (ln_dpo divides them by |y|), h = ρ_w − ρ_l,
and every loss is the batch mean of a per-pair loss, as in TRL's ``DPOTrainer``.
β and ``label_smoothing`` mean what they mean in ``DPOConfig``. The sibling modules hold the
reference-free (reference_free.py), soft-label (soft_label.py) and unpaired (unpaired.py) objectives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefrun.objectives.checks import hparam, require, smoothing_below_half
from prefrun.objectives.common import chosen_rejected, core_metrics, log_ratios
from prefrun.objectives.registry import ObjectiveOutput, register


def _out(loss: torch.Tensor, policy_logps, ref_logps, scores, mask, lengths, beta: float) -> ObjectiveOutput:
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


@register("cdpo", data="pairwise", needs_reference=True, validate=smoothing_below_half("cdpo"))
def cdpo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.1,
) -> ObjectiveOutput:
    """Conservative DPO (E. Mitchell 2023, "A note on DPO with noisy preferences"; DPO is arXiv 2305.18290).

    L = −(1−ε)·log σ(β·h) − ε·log σ(−β·h), ε = ``label_smoothing`` ∈ [0, 0.5): label-smoothed DPO for a
    flip rate ε. Equals TRL ``loss_type="sigmoid", label_smoothing=ε`` up to v0.28; TRL ≥ 0.29 (and 1.16)
    ignores ``label_smoothing`` in the sigmoid branch, so this is prefrun's own implementation.
    Data: pairwise; no extra inputs.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    z = beta * (rho_w - rho_l)
    loss = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)


@register("nca_pair", data="pairwise", needs_reference=True)
def nca_pair(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.1,
) -> ObjectiveOutput:
    """NCA on pairs (Chen et al. 2024, "Noise Contrastive Alignment", arXiv 2402.05369), r = β·ρ:

    L = −log σ(r_w) − ½·log σ(−r_w) − ½·log σ(−r_l). Unlike DPO it acts on each reward on its own (it
    pushes r_w up absolutely, not only the margin). Equals TRL ``loss_type="nca_pair"``. Data: pairwise.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    r_w, r_l = beta * rho_w, beta * rho_l
    loss = -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)


def _check_exo(hp: dict[str, object]) -> None:
    eps = hparam(hp, "label_smoothing")
    require(
        0.0 < eps < 1.0,
        "exo_pair",
        "label_smoothing",
        eps,
        "it must be in (0, 1): EXO takes log ε and log(1 − ε)",
        "the EXO paper uses 1e-3",
    )


@register("exo_pair", data="pairwise", needs_reference=True, validate=_check_exo)
def exo_pair(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 1e-3,
) -> ObjectiveOutput:
    """EXO-pref (Ji et al. 2024, "Towards Efficient Exact Optimization of LM Alignment", arXiv 2402.00856).

    Eq. 16 of the paper (K = 2): KL(q_θ ‖ p) over {w, l}, with q_θ = softmax(β·ρ) (so q_w = σ(β·h)) and
    the smoothed target p = (1−ε, ε):
    L = q_w·(log q_w − log(1−ε)) + q_l·(log q_l − log ε), with log q_w = log σ(β·h), log q_l = log σ(−β·h).
    ε = ``label_smoothing`` ∈ (0, 1) (must be > 0). Equals TRL ``loss_type="exo_pair"``. Data: pairwise.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    z = beta * (rho_w - rho_l)
    eps = torch.as_tensor(label_smoothing, dtype=z.dtype, device=z.device)
    log_qw, log_ql = F.logsigmoid(z), F.logsigmoid(-z)
    loss = log_qw.exp() * (log_qw - torch.log1p(-eps)) + log_ql.exp() * (log_ql - torch.log(eps))
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)


@register("apo_zero", data="pairwise", needs_reference=True)
def apo_zero(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.1,
) -> ObjectiveOutput:
    """APO-zero (D'Oosterlinck et al. 2024, "Anchored Preference Optimization", arXiv 2408.06266, Eq. 7).

    L = (1 − σ(β·ρ_w)) + σ(β·ρ_l): raise the chosen likelihood and lower the rejected one, anchored at the
    reference. For when the chosen responses are better than the model's own. Equals TRL ``"apo_zero"``.
    Data: pairwise.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    loss = torch.sigmoid(-beta * rho_w) + torch.sigmoid(beta * rho_l)
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)


@register("apo_down", data="pairwise", needs_reference=True)
def apo_down(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.1,
) -> ObjectiveOutput:
    """APO-down (D'Oosterlinck et al. 2024, arXiv 2408.06266, Eq. 8): L = σ(β·ρ_w) + (1 − σ(β·(ρ_w − ρ_l))).

    Lowers both likelihoods, the rejected one more. For when the chosen responses are worse than the model's
    own. Equals TRL ``loss_type="apo_down"``. Data: pairwise.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    loss = torch.sigmoid(beta * rho_w) + torch.sigmoid(-beta * (rho_w - rho_l))
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)


def _check_discopop(hp: dict[str, object]) -> None:
    tau = hparam(hp, "tau")
    require(tau > 0, "discopop", "tau", tau, "the temperature must be > 0", "the DiscoPOP paper uses 0.05")


@register("discopop", data="pairwise", needs_reference=True, validate=_check_discopop)
def discopop(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.05,
    tau: float = 0.05,
) -> ObjectiveOutput:
    """DiscoPOP / log-ratio modulated loss (Chris Lu et al. 2024, arXiv 2406.08414, Eq. 5), z = β·h:

    L = (1 − m)·(−log σ(z)) + m·exp(−z), m = σ(z/τ), τ = ``tau`` (TRL ``discopop_tau``, default 0.05).
    Equals TRL ``loss_type="discopop"``; m·exp(−z) is computed as exp(log σ(z/τ) − z), the same value without
    TRL's inf·0 = NaN when z is very negative. Data: pairwise.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    z = beta * (rho_w - rho_l)
    m = torch.sigmoid(z / tau)
    loss = (1 - m) * -F.logsigmoid(z) + torch.exp(F.logsigmoid(z / tau) - z)
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)


@register("aot", data="pairwise", needs_reference=True, validate=smoothing_below_half("aot"))
def aot(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> ObjectiveOutput:
    """AOT, paired (Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
    arXiv 2406.05882).

    u = ℓ_θ(y_w) − ℓ_θ(y_l) and v = ℓ_ref(y_w) − ℓ_ref(y_l) per pair (summed log-probs); each is **sorted
    across the batch** (ascending) and paired by rank: δ_(i) = u_(i) − v_(i). Then
    L = mean_i [−(1−ε)·log σ(β·δ_(i)) − ε·log σ(−β·δ_(i))], ε = ``label_smoothing``.
    Because of the sort, a pair's loss depends on the other pairs in the batch: the objective changes with the
    (micro-)batch size, is not a mean of per-example losses, and gradient accumulation is not equivalent to a
    larger batch. Equals TRL ``loss_type="aot"``. Data: pairwise.
    """
    lp_w, lp_l = chosen_rejected(policy_logps, scores, mask)
    ref_w, ref_l = chosen_rejected(ref_logps, scores, mask)
    u, _ = torch.sort(lp_w - lp_l, dim=0)
    v, _ = torch.sort(ref_w - ref_l, dim=0)
    z = beta * (u - v)
    loss = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)


@register("ln_dpo", data="pairwise", needs_reference=True)
def ln_dpo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 1.0,
) -> ObjectiveOutput:
    """LN-DPO (Ahrabian et al. 2024, "The Hitchhiker's Guide to Human Alignment with *PO", arXiv 2407.15229).

    DPO on per-token log-ratios: L = −log σ(β·(ρ_w/|y_w| − ρ_l/|y_l|)), |y| = ``lengths`` (clamped ≥ 1).
    Because the margin is per token, β is on SimPO's scale (≈1–10), not DPO's 0.1. Equals TRL
    ``loss_type="sigmoid_norm"`` (whose docs attribute it to SimPO). Data: pairwise.
    """
    rho = (policy_logps - ref_logps) / lengths.to(policy_logps.dtype).clamp(min=1)
    rho_w, rho_l = chosen_rejected(rho, scores, mask)
    loss = -F.logsigmoid(beta * (rho_w - rho_l))
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)


@register("sppo_hard", data="pairwise", needs_reference=True)
def sppo_hard(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.001,
) -> ObjectiveOutput:
    """SPPO with hard labels (Wu et al. 2024, "Self-Play Preference Optimization", arXiv 2405.00675).

    L = (ρ_w − 1/(2β))² + (ρ_l + 1/(2β))²: soft SPPO with P̂_w = 1, P̂_l = 0 and without its ½ factor
    (the soft version is ``sppo``). Summed log-ratios; with β = 0.001 the targets are ±500 nats. The
    reference should be the previous iterate (refreshed each SPPO iteration). Equals TRL
    ``loss_type="sppo_hard"``. Data: pairwise.
    """
    rho_w, rho_l = log_ratios(policy_logps, ref_logps, scores, mask)
    loss = (rho_w - 0.5 / beta).pow(2) + (rho_l + 0.5 / beta).pow(2)
    return _out(loss.mean(), policy_logps, ref_logps, scores, mask, lengths, beta)
