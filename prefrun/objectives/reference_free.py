"""Pairwise objectives without a reference model: SimPO, ORPO, CPO, SLiC-HF, ASFT.

Each list holds K = 2 responses; the higher-scored one is chosen (w). ℓ(y) is the summed response log-prob
and ℓ̄(y) = ℓ(y)/|y| the per-token mean (|y| = ``lengths``, clamped ≥ 1). ``ref_logps`` arrive as zeros and
are never read by the losses; logged rewards are β·ℓ(y). Each objective's docstring cites its paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from prefrun.objectives.checks import hparam, require
from prefrun.objectives.common import chosen_rejected, core_metrics, masked_mean
from prefrun.objectives.registry import ObjectiveOutput, register

_LOG_HALF = -math.log(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, stable (Mächler 2012): log1p(−eˣ) below −ln 2, log(−expm1 x) above it.

    x is clamped to ≤ −tiny so that x = 0 (p = 1) gives a large finite value instead of −inf, and each branch
    only sees inputs from its own side, so no NaN gradient leaks through ``torch.where``.
    """
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    low = x < _LOG_HALF
    below = torch.log1p(-torch.exp(torch.where(low, x, torch.full_like(x, _LOG_HALF))))
    above = torch.log(-torch.expm1(torch.where(low, torch.full_like(x, _LOG_HALF), x)))
    return torch.where(low, below, above)


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _mean_logps(policy_logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """ℓ̄ = ℓ/|y| [B, K], in at least fp32."""
    logps = _at_least_fp32(policy_logps)
    return logps / lengths.to(logps.dtype).clamp(min=1)


def _chosen_token_nll(policy_logps, scores, mask, lengths) -> torch.Tensor:
    """−Σ_b ℓ(y_w) / Σ_b |y_w|: the token-mean NLL of the chosen responses over the batch (TRL's CE mean)."""
    logps = _at_least_fp32(policy_logps)
    lp_w, _ = chosen_rejected(logps, scores, mask)
    len_w, _ = chosen_rejected(lengths.to(logps.dtype), scores, mask)
    return -lp_w.sum() / len_w.sum().clamp(min=1)


def _check_simpo(hp: dict[str, object]) -> None:
    ratio = hparam(hp, "gamma_beta_ratio")
    require(
        ratio >= 0,
        "simpo",
        "gamma_beta_ratio",
        ratio,
        "the target margin γ/β must be ≥ 0",
        "the SimPO configs use 0.3–0.8",
    )


@register("simpo", data="pairwise", needs_reference=False, validate=_check_simpo)
def simpo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 2.0,
    gamma_beta_ratio: float = 0.8,
) -> ObjectiveOutput:
    """SimPO (Meng et al. 2024, arXiv 2405.14734): L = −log σ(β·ℓ̄(y_w) − β·ℓ̄(y_l) − γ).

    γ = ``gamma_beta_ratio``·β. Reference-free, per-token mean log-probs. The hyperparameter is γ/β, as in
    the official configs (Mistral-7B-base: β = 2.0, γ/β = 0.8). Equals TRL ``CPOTrainer(loss_type="simpo",
    cpo_alpha=0, simpo_gamma=γ)``; note TRL's ``simpo_gamma`` is γ itself, not the ratio. Data: pairwise.
    """
    avg_w, avg_l = chosen_rejected(_mean_logps(policy_logps, lengths), scores, mask)
    gamma = gamma_beta_ratio * beta
    loss = -F.logsigmoid(beta * (avg_w - avg_l) - gamma)
    return ObjectiveOutput(loss.mean(), core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta))


@register("orpo", data="pairwise", needs_reference=False)
def orpo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.1,
) -> ObjectiveOutput:
    """ORPO (Hong et al. 2024, arXiv 2403.07691): L = NLL(y_w) − λ·mean log σ(log odds(y_w) − log odds(y_l)).

    λ = ``beta`` (as ``ORPOConfig.beta``). odds(y) = p/(1−p) with p = exp(ℓ̄(y)), so
    log odds(y) = ℓ̄(y) − log(1 − exp(ℓ̄(y))), the last term by a stable ``log1mexp`` in at least fp32.
    NLL(y_w) = −Σ_b ℓ(y_w)/Σ_b |y_w|, the token-mean over the batch's chosen responses, as TRL's ORPO
    cross-entropy; TRL's also counts the prompt tokens, prefrun's counts response tokens only.
    The odds-ratio term equals TRL ``ORPOTrainer.odds_ratio_loss``. Data: pairwise.
    """
    avg_w, avg_l = chosen_rejected(_mean_logps(policy_logps, lengths), scores, mask)
    log_odds = (avg_w - avg_l) - (log1mexp(avg_w) - log1mexp(avg_l))
    log_odds_ratio = F.logsigmoid(log_odds)
    nll = _chosen_token_nll(policy_logps, scores, mask, lengths)
    loss = nll - beta * log_odds_ratio.mean()
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta)
    metrics["nll_loss"] = nll.item()
    metrics["log_odds_ratio"] = log_odds_ratio.mean().item()
    metrics["log_odds_chosen"] = log_odds.mean().item()
    return ObjectiveOutput(loss, metrics)


def _check_cpo(hp: dict[str, object]) -> None:
    alpha = hparam(hp, "cpo_alpha")
    require(alpha >= 0, "cpo", "cpo_alpha", alpha, "the NLL weight must be ≥ 0", "the CPO paper uses 1.0")


@register("cpo", data="pairwise", needs_reference=False, validate=_check_cpo)
def cpo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beta: float = 0.1,
    cpo_alpha: float = 1.0,
) -> ObjectiveOutput:
    """CPO (Xu et al. 2024, "Contrastive Preference Optimization", arXiv 2401.08417):

    L = mean −log σ(β·ℓ(y_w) − β·ℓ(y_l)) + α·NLL(y_w), with **summed** log-probs in the first term,
    α = ``cpo_alpha`` and NLL(y_w) = −Σ_b ℓ(y_w)/Σ_b |y_w| (token-mean over the batch's chosen responses).
    Equals TRL ``CPOTrainer(loss_type="sigmoid", label_smoothing=0)``. Data: pairwise.
    """
    lp_w, lp_l = chosen_rejected(policy_logps, scores, mask)
    preference = -F.logsigmoid(beta * (lp_w - lp_l)).mean()
    nll = _chosen_token_nll(policy_logps, scores, mask, lengths)
    loss = preference + cpo_alpha * nll
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta)
    metrics["nll_loss"] = nll.item()
    return ObjectiveOutput(loss, metrics)


def _check_slic(hp: dict[str, object]) -> None:
    delta = hparam(hp, "delta")
    require(delta >= 0, "slic", "delta", delta, "the margin must be ≥ 0", "try 1.0")
    weight = hparam(hp, "reg_weight")
    require(weight >= 0, "slic", "reg_weight", weight, "the regularisation weight must be ≥ 0", "try 0.5")


@register("slic", data="pairwise", needs_reference=False, validate=_check_slic)
def slic(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    delta: float = 1.0,
    reg_weight: float = 0.5,
) -> ObjectiveOutput:
    """SLiC-HF (Zhao et al. 2023, arXiv 2305.10425), reference-free calibration + regularisation:

    L = mean [max(0, δ − ℓ(y_w) + ℓ(y_l)) − λ·ℓ(y_w)], δ = ``delta``, λ = ``reg_weight``, summed log-probs;
    the regularisation target y_ref is the chosen response. Defaults δ = 1, λ = 0.5 are not checked against
    the paper [U]. Not TRL's ``"hinge"`` (which uses the reference); closest to
    ``CPOTrainer("hinge")``, which scales by β and takes a token-mean NLL. Data: pairwise.
    """
    lp_w, lp_l = chosen_rejected(policy_logps, scores, mask)
    loss = torch.relu(delta - lp_w + lp_l) - reg_weight * lp_w
    return ObjectiveOutput(loss.mean(), core_metrics(policy_logps, ref_logps, scores, mask, lengths))


def _check_asft(hp: dict[str, object]) -> None:
    weight = hparam(hp, "align_weight")
    require(weight >= 0, "asft", "align_weight", weight, "λ must be ≥ 0", "try 0.1")


@register("asft", data="pairwise", needs_reference=False, validate=_check_asft)
def asft(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    *,
    align_weight: float = 0.1,
) -> ObjectiveOutput:
    """ASFT (Wang et al. 2024, "Aligned SFT through Absolute Likelihood", arXiv 2409.10571).

    With λ = ``align_weight``: L = mean [−log p(y_w) − λ·(log σ(r(y_w)) + log σ(−r(y_l)))],
    p(y) = exp(ℓ̄(y)), r(y) = log(p/(1−p)). Since σ(r) = p this is −(1+λ)·ℓ̄(y_w) − λ·log(1 − p(y_l)),
    computed so, with a stable ``log1mexp`` in at least fp32: a pointwise BCE with no pairwise margin.
    λ = 0.1 is a guess ([U], as ORPO's); not in TRL. Data: pairwise.
    """
    avg_w, avg_l = chosen_rejected(_mean_logps(policy_logps, lengths), scores, mask)
    loss = -(1 + align_weight) * avg_w - align_weight * log1mexp(avg_l)
    return ObjectiveOutput(loss.mean(), core_metrics(policy_logps, ref_logps, scores, mask, lengths))


@register("poft", data="list", needs_reference=False, min_k=1)
def poft(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    baseline_logps: torch.Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 0.0,
) -> ObjectiveOutput:
    """PoFT, preference-oriented SFT (Fan et al. 2024, arXiv 2412.12865, Eq. 5–6).

    L = mean over every real response of −log σ(β·ℓ̄_θ(y) − β·b(y) + γ), where ℓ̄_θ is the policy's
    per-token log-prob and b = ``baseline_logps`` [B, K] the mean over M frozen aligned models of their
    per-token log-probs of y (each model with its own tokenizer and chat template). Its
    gradient is β·∇ℓ̄_θ weighted by σ(β·b − β·ℓ̄_θ − γ) (logged as ``poft/weight``): responses the aligned
    models find likely weigh more (soft data filtering). β = 1, γ = 0 as in the reference code.
    Reference-free: b is no KL anchor.
    Data: SFT lists (K ≥ 1) with a ``baseline_logps`` field, read from the data (dataset.fields.baseline_logps)
    or computed once before training by the models listed in ``objective.baselines`` and cached
    (prefrun.trainers.baseline_scores); the run refuses both at once.
    """
    z = beta * _mean_logps(policy_logps, lengths) - beta * baseline_logps.to(policy_logps.dtype) + gamma
    loss = masked_mean(-F.logsigmoid(z), mask)
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths)
    metrics["poft/weight"] = masked_mean(torch.sigmoid(-z).detach(), mask).item()
    return ObjectiveOutput(loss, metrics)
