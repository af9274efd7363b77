"""Objectives that exist only online: RLOO, GRPO (sequence-level ratio) and P3O, on K samples of the policy.

Each list holds K responses sampled from the policy π_old that produced them, scored by a reward source
(``scores`` = rewards r, higher is better). Besides the usual inputs these objectives take ``old_logps``
[B, K]: the summed log-probs ℓ_old(y) of each sample under the sampling policy, without gradient (the online
loop records them). ``policy_logps`` ℓ_θ and ``ref_logps`` ℓ_ref are summed over response tokens too, so
every ratio here is a *sequence-level* ratio of whole responses (the contextual-bandit view: one response is
one action). ``mask`` False marks a sample that is not there (padding, or a sample the reward source could
not score): it is left out of every baseline, mean and pair.

    ρ(y)  = exp(ℓ_θ(y) − ℓ_old(y))                     importance ratio (RLOO, P3O "separate")
    r̃(y)  = r(y) − β·(ℓ_old(y) − ℓ_ref(y))            reward with the sequence KL folded in (RLOO, P3O)
    clipped(ρ, A) = min(ρ·A, clip(ρ, 1 − ε, 1 + ε_high)·A)   PPO's clipped surrogate (Schulman et al. 2017)

Run them with ``task=online``; offline data has no ``old_logps`` (the preference task refuses them).
"""

from __future__ import annotations

import torch

from prefrun.errors import PrefrunError
from prefrun.objectives.checks import hparam, require
from prefrun.objectives.common import core_metrics, masked_mean
from prefrun.objectives.registry import ObjectiveOutput, register

STD_EPS = 1e-4  # added to standard deviations before dividing, as TRL's RLOOTrainer and GRPOTrainer do


def _need_old_logps(name: str, old_logps: torch.Tensor | None) -> torch.Tensor:
    if old_logps is None:
        raise ValueError(
            f"{name} needs old_logps (the sampling policy's summed log-probs of each sample): run it with task=online"
        )
    return old_logps.to(torch.float32).detach()


def clipped(ratio: torch.Tensor, advantage: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """PPO's clipped surrogate min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A), elementwise (to be maximised)."""
    return torch.min(ratio * advantage, ratio.clamp(1 - eps_low, 1 + eps_high) * advantage)


def _clip_fraction(ratio: torch.Tensor, advantage: torch.Tensor, mask: torch.Tensor, lo: float, hi: float) -> float:
    """Share of samples whose surrogate is clipped (TRL's ``clip_ratio/region_mean``)."""
    clipped_region = ((ratio < 1 - lo) & (advantage < 0)) | ((ratio > 1 + hi) & (advantage > 0))
    return masked_mean(clipped_region.float(), mask).item()


def kl_shaped_rewards(
    scores: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float, mask: torch.Tensor
) -> torch.Tensor:
    """r̃ = r − β·(ℓ_old − ℓ_ref) [B, K], without gradient: the sequence KL estimate of the sample as a penalty.

    Entries that are not there are 0 (whatever padding holds, even NaN), so masked sums stay finite."""
    shaped = scores.to(torch.float32) - beta * (old_logps - ref_logps.to(torch.float32))
    return shaped.masked_fill(~mask, 0.0).detach()


def _masked_std(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Bessel-corrected std over the real entries (NaN with fewer than two), as TRL's ``nanstd``."""
    m = mask.to(values.dtype)
    n = m.sum() if dim is None else m.sum(dim=dim, keepdim=True)
    mean = (values * m).sum() / n if dim is None else (values * m).sum(dim=dim, keepdim=True) / n
    var = (((values - mean) * m) ** 2).sum() if dim is None else (((values - mean) * m) ** 2).sum(dim, keepdim=True)
    return torch.where(n > 1, (var / (n - 1).clamp(min=1)).sqrt(), torch.full_like(var, float("nan")))


def _check_epsilons(name: str):
    def check(hp: dict[str, object]) -> None:
        eps = hparam(hp, "epsilon")
        require(0.0 < eps < 1.0, name, "epsilon", eps, "the ratio is clipped to [1 − ε, 1 + ε]", "try 0.2")
        if hp.get("epsilon_high") is not None:
            high = hparam(hp, "epsilon_high")
            require(high > 0.0, name, "epsilon_high", high, "the ratio's upper clip is 1 + epsilon_high", "try 0.28")
        for key, choices in (("clip", ("separate", "joint")), ("scale_rewards", ("group", "batch", "none"))):
            if key in hp and hp[key] not in choices:
                raise PrefrunError(f"objective.{key}={hp[key]!r} is not one of {'|'.join(choices)}; e.g. {choices[0]}")

    return check


def _metrics(policy_logps, ref_logps, scores, mask, lengths, beta, old_logps, ratio, adv, lo, hi) -> dict[str, float]:
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta)
    with torch.no_grad():
        metrics["kl"] = masked_mean(old_logps - ref_logps, mask).item()  # sequence KL(π_old ‖ π_ref) estimate
        metrics["reward"] = masked_mean(scores.to(torch.float32), mask).item()
        metrics["clip_ratio/region"] = _clip_fraction(ratio, adv, mask, lo, hi)
        metrics["ratio/mean"] = masked_mean(ratio, mask).item()
    return metrics


@register("rloo", data="list", needs_reference=True, min_k=2, validate=_check_epsilons("rloo"))
def rloo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.05,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    normalize_advantages: bool = False,
) -> ObjectiveOutput:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740; Kool et al. 2019), as
    TRL 1.16's ``RLOOTrainer`` computes it:

        r̃_i = r_i − β·(ℓ_old(y_i) − ℓ_ref(y_i))              KL folded into the reward, before the baseline
        A_i  = r̃_i − 1/(n−1) Σ_{j≠i} r̃_j                    leave-one-out baseline over the n real samples
        L    = −mean_i min(ρ_i A_i, clip(ρ_i, 1−ε, 1+ε_high) A_i),   ρ_i = exp(ℓ_θ(y_i) − ℓ_old(y_i))

    The ratio is TRL's: sequence level, of summed log-probs (``rloo_trainer.py`` ``_compute_loss``), and so is
    the KL (π_old's summed log-ratio, a first-order estimate that can be negative). ``normalize_advantages``:
    (A − mean A)/(std A + 1e-4) over the batch's samples, Bessel std, as TRL's option; TRL takes the moments over
    its whole generation batch (all ranks, all micro-batches of a step), prefrun over the batch the objective
    sees, so the two agree with one rank and no gradient accumulation. ``epsilon_high`` None = ``epsilon``.
    TRL's RLOO is sequence-level already; parity (tests/objectives/test_online_objectives.py, K = 2 and 4, loss
    and gradient to 1e-5) holds with ``temperature=1`` (TRL divides the logits by it), its defaults otherwise.
    Where samples are missing: a list with one real sample has advantage 0 (as in TRL), and the mean runs over
    the real samples only (TRL also counts its unscorable rows, whose term is 0).
    Data: list of K ≥ 2 samples of the policy; extra input ``old_logps`` [B, K].
    """
    old = _need_old_logps("rloo", old_logps)
    m = mask.to(torch.float32)
    rewards = kl_shaped_rewards(scores, old, ref_logps, beta, mask)
    n = m.sum(dim=1, keepdim=True)
    others = ((rewards * m).sum(dim=1, keepdim=True) - rewards) / (n - 1).clamp(min=1)
    valid = mask & (n > 1)  # a lone sample has no baseline: advantage 0
    adv = torch.where(valid, rewards - others, torch.zeros_like(rewards))
    if normalize_advantages:
        mean = masked_mean(adv, valid)
        adv = torch.where(valid, (adv - mean) / (_masked_std(adv, valid) + STD_EPS), torch.zeros_like(adv))
        adv = torch.nan_to_num(adv, nan=0.0)
    hi = epsilon if epsilon_high is None else float(epsilon_high)
    ratio = torch.exp(policy_logps - old)
    loss = -masked_mean(clipped(ratio, adv, epsilon, hi), mask)
    metrics = _metrics(policy_logps, ref_logps, scores, mask, lengths, beta, old, ratio.detach(), adv, epsilon, hi)
    return ObjectiveOutput(loss, metrics)


@register("grpo", data="list", needs_reference=True, min_k=2, validate=_check_epsilons("grpo"))
def grpo(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.04,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    scale_rewards: str = "group",
    use_bias_correction_kl: bool = True,
) -> ObjectiveOutput:
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300: the objective as its Eq. 3, the k3 KL estimator as
    its Eq. 4, both numbers recalled, not verified) with GSPO's sequence-level ratio (Zheng et al. 2025, arXiv
    2507.18071), as TRL 1.16's ``GRPOTrainer`` with ``importance_sampling_level="sequence"``, ``loss_type="grpo"``
    computes it:

        A_i = (r_i − mean_j r_j) / (std_j r_j + 1e-4)          group-normalised, Bessel std over the list
        s_i = exp((ℓ_θ(y_i) − ℓ_old(y_i)) / |y_i|)             length-normalised sequence ratio (GSPO)
        δ_i = (ℓ_ref(y_i) − ℓ_θ(y_i)) / |y_i|,   KL_i = exp(δ_i) − δ_i − 1
        L   = mean_i [ −min(s_i A_i, clip(s_i, 1−ε, 1+ε_high) A_i) + β·w_i·KL_i ]

    ``use_bias_correction_kl`` (TRL 1.16's default, True): w_i = s_i, with its gradient, the importance weight
    that makes the KL gradient the unbiased reverse-KL gradient (DeepSeek-V3.2, arXiv 2512.02556, as TRL's
    ``GRPOConfig`` cites it); False: w_i = 1, DeepSeekMath's term.
    ``scale_rewards``: ``group`` (above), ``batch`` (std over every sample of the batch, TRL's option) or ``none``
    (A = r − mean). The KL is not in the reward (RLOO's choice) but in the loss, with the gradient, as GRPO's.
    What differs from token-level GRPO (TRL's default ``importance_sampling_level="token"``): token-level GRPO
    clips a ratio per token and averages the per-token surrogates; here one ratio per response, the geometric mean
    of the per-token ratios, is clipped as a whole. And the KL: GRPO's per-token estimator k3 averaged over tokens
    needs per-token log-probs, which an objective of summed log-probs does not have; this applies k3 to the
    per-token mean log-ratio δ_i instead (equal for one-token responses, or when the per-token log-ratio is
    constant; by Jensen never larger). With ``beta`` → 0 the loss is TRL's exactly (the registry asks β > 0, so
    TRL's default β = 0 reads as a small β here). Data: list of K ≥ 2; extra input ``old_logps`` [B, K].
    """
    old = _need_old_logps("grpo", old_logps)
    r = scores.to(torch.float32).masked_fill(~mask, 0.0)
    m = mask.to(torch.float32)
    n = m.sum(dim=1, keepdim=True)
    adv = r - (r * m).sum(dim=1, keepdim=True) / n.clamp(min=1)
    if scale_rewards == "group":
        adv = adv / (_masked_std(r, mask, dim=1) + STD_EPS)
    elif scale_rewards == "batch":
        adv = adv / (_masked_std(r, mask) + STD_EPS)
    adv = torch.where(mask, torch.nan_to_num(adv, nan=0.0), torch.zeros_like(adv))  # a lone sample: 0
    hi = epsilon if epsilon_high is None else float(epsilon_high)
    tokens = lengths.to(torch.float32).clamp(min=1)
    ratio = torch.exp((policy_logps - old) / tokens)
    delta = (ref_logps - policy_logps) / tokens
    kl = torch.exp(delta) - delta - 1
    weight = ratio if use_bias_correction_kl else 1.0
    loss = masked_mean(-clipped(ratio, adv, epsilon, hi) + beta * weight * kl, mask)
    metrics = _metrics(policy_logps, ref_logps, scores, mask, lengths, beta, old, ratio.detach(), adv, epsilon, hi)
    metrics["kl/k3"] = masked_mean(kl.detach(), mask).item()
    return ObjectiveOutput(loss, metrics)


@register("p3o", data="list", needs_reference=True, min_k=2, validate=_check_epsilons("p3o"))
def p3o(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.05,
    epsilon: float = 0.2,
    clip: str = "separate",
) -> ObjectiveOutput:
    """Pairwise PPO, P3O (Wu, Zhu, Zhang, Wen, Ramchandran, Jiao 2023, "Pairwise Proximal Policy Optimization:
    Harnessing Relative Feedback for LLM Alignment", arXiv 2310.00212). For two samples y_i, y_j of a prompt:

        Δ_ij = r̃_i − r̃_j,   r̃ = r − β·(ℓ_old − ℓ_ref)        only reward differences enter
        clip="separate" (P3O-V1):  T_ij = min(ρ_i Δ_ij, clip(ρ_i, 1±ε) Δ_ij),   ρ_i = exp(ℓ_θ(y_i) − ℓ_old(y_i))
        clip="joint"    (P3O-V2):  T_ij = min(ρ_ij Δ_ij, clip(ρ_ij, 1±ε) Δ_ij), ρ_ij = ρ_i/ρ_j
                                    = exp[(ℓ_θ(y_i) − ℓ_θ(y_j)) − (ℓ_old(y_i) − ℓ_old(y_j))]
        pair loss = −½(T_ij + T_ji);   L = mean over the pairs of the batch

    At θ = θ_old both give the pairwise policy gradient −½ E[Δ ∇(ℓ_θ(y_i) − ℓ_θ(y_j))] (V1) and twice it (V2).
    The paper's equation numbers are recalled, not verified (its full text was not readable here): the
    pairwise policy gradient as its Eq. 3 and the two clipped surrogates, separate and joint, in §4
    ("Algorithm 1"). Its joint surrogate is written for the ordered pair (y1, y2); the ½(T_ij + T_ji) form here is
    its average over the two orders, which the sampling makes equally likely, so the loss does not depend on the
    order of the samples. V1 with K = 2 is TRL's RLOO with K = 2, exactly (same β, ε, and ε_high = ε): RLOO's
    leave-one-out advantage of y_1 is r̃_1 − r̃_2 = Δ_12, and its mean over the 2 samples of a prompt is the pair
    loss. The update is invariant to adding any per-prompt constant to the rewards (the paper's "invariance to
    equivalent rewards").
    K > 2: every unordered pair of real samples of a list is one pair (each pair weighs the same); for V1 this
    clips per pair, so it is no longer RLOO's loss, which clips once on the mean of the pairs' Δ.
    Data: list of K ≥ 2 samples of the policy (exactly pairs in the paper); extra input ``old_logps`` [B, K].
    """
    old = _need_old_logps("p3o", old_logps)
    rewards = kl_shaped_rewards(scores, old, ref_logps, beta, mask)
    k = scores.shape[1]
    delta = rewards[:, :, None] - rewards[:, None, :]  # Δ_ij [B, K, K]
    pairs = mask[:, :, None] & mask[:, None, :] & ~torch.eye(k, dtype=torch.bool, device=mask.device)
    log_ratio = policy_logps - old
    if clip == "joint":
        ratio = torch.exp(log_ratio[:, :, None] - log_ratio[:, None, :])  # ρ_ij
    else:
        ratio = torch.exp(log_ratio)[:, :, None].expand(-1, -1, k)  # ρ_i, whichever j it is paired with
    # The mean over ordered pairs (i, j), i ≠ j, of −T_ij is the mean over unordered pairs of −½(T_ij + T_ji).
    loss = -masked_mean(clipped(ratio, delta, epsilon, epsilon), pairs)
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta)
    with torch.no_grad():
        metrics["kl"] = masked_mean(old - ref_logps, mask).item()
        metrics["reward"] = masked_mean(scores.to(torch.float32), mask).item()
        metrics["clip_ratio/region"] = _clip_fraction(ratio.detach(), delta, pairs, epsilon, epsilon)
        metrics["pairs"] = pairs.sum().item() / 2
    return ObjectiveOutput(loss, metrics)
