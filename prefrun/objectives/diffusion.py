"""Preference objectives of diffusion models, on the [B, K] interface with the denoising error as log-likelihood.

A diffusion model has no tractable log-likelihood; its ELBO is, up to a constant and a weighting, minus the
noise-prediction error at a random timestep (Ho et al. 2020, eq. 12; Wallace et al. 2023, eq. 9–14). So the
diffusion task feeds these objectives

    policy_logps[:, k] = −ℓ_θ(x_k) = −mean over pixels of (ε − ε_θ(x_k,t, t))²         [B, 2]
    ref_logps[:, k]    = −ℓ_ref(x_k)  (the frozen reference, or the LoRA adapter turned off)

with the winner and the loser of each pair noised by the *same* ε and t (without that, ℓ_w − ℓ_l is
dominated by the timestep's noise level, not by the images). ``lengths`` is unused (1s). They register with
``trains="diffusion"``: the diffusion task trains them, a text task refuses them and the reverse.

Conventions of the reference codes, and the bugs avoided:

- Diffusion-DPO's official code (SalesforceAIResearch/DiffusionDPO ``train.py``) writes
  ``inside = −½·β·(model_diff − ref_diff)`` with β = 5000; the diffusers research example
  (``train_diffusion_dpo.py``) writes ``β' · (ref_diff − model_diff)`` with β' = 2500: the same loss,
  β' = β/2. Here ``beta`` is the official β.
- The loss is the mean of −log σ over pairs, not −log σ of the mean margin (an earlier diffusers version's
  bug: the paper's HPSv2 could not be reproduced with it).
- The diffusers ORPO example's preference term ``logsigmoid(ℓ_w − ℓ_l)`` pushes the winner's error *up*;
  MaPO's f is decreasing in ℓ, so its term pushes it down (tests: one step lowers ℓ_w − ℓ_l for every
  objective here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefrun.objectives.common import chosen_rejected, core_metrics
from prefrun.objectives.registry import ObjectiveOutput, register


def _errors(logps: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ℓ_w [B], ℓ_l [B]): the denoising errors of winner and loser from their log-likelihood surrogates −ℓ."""
    neg_w, neg_l = chosen_rejected(logps, scores, mask)
    return -neg_w, -neg_l


def _metrics(policy_logps, ref_logps, scores, mask, lengths, beta: float, inside: torch.Tensor) -> dict[str, float]:
    metrics = core_metrics(policy_logps, ref_logps, scores, mask, lengths, beta)
    with torch.no_grad():
        loss_w, loss_l = _errors(policy_logps, scores, mask)
        # Ties count ½ (as the diffusers example does); the official code's strict > gives 0 at step 0.
        metrics["implicit_acc"] = ((inside > 0).float() + 0.5 * (inside == 0).float()).mean().item()
        metrics["mse/chosen"] = loss_w.mean().item()
        metrics["mse/rejected"] = loss_l.mean().item()
    return metrics


@register("diffusion_dpo", data="pairwise", needs_reference=True, trains="diffusion")
def diffusion_dpo(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 5000.0) -> ObjectiveOutput:
    """Diffusion-DPO (Wallace et al. 2023, arXiv 2311.12908, eq. 14; the official code's form):

        L = −log σ(−½·β·[(ℓ_w − ℓ_l)_θ − (ℓ_w − ℓ_l)_ref]),   β = 5000 (SD 1.5 and SDXL launchers)

    with ℓ the per-sample mean squared noise-prediction error, winner and loser sharing t and ε. With
    log π ≈ −ℓ this is DPO at β/2: the inside equals ½·β·(ρ_w − ρ_l). The diffusers example's β = 2500 is
    this β/2 (its ``logits = ref_diff − model_diff``, ``−logsigmoid(β'·logits)``). At the reference the loss
    is log 2 exactly.
    """
    err_w, err_l = _errors(policy_logps, scores, mask)
    ref_w, ref_l = _errors(ref_logps, scores, mask)
    inside = -0.5 * beta * ((err_w - err_l) - (ref_w - ref_l))
    loss = -F.logsigmoid(inside).mean()
    metrics = _metrics(policy_logps, ref_logps, scores, mask, lengths, 0.5 * beta, inside)
    with torch.no_grad():
        metrics["mse/ref_chosen"] = ref_w.mean().item()
        metrics["mse/ref_rejected"] = ref_l.mean().item()
    return ObjectiveOutput(loss, metrics)


def mapo_f(err: torch.Tensor, snr_value: float) -> torch.Tensor:
    """MaPO's bounded likelihood surrogate f(ℓ) = s·ℓ / (exp(s·ℓ) − 1): 1 at ℓ → 0, decreasing, > 0.

    ``expm1`` keeps it exact for small s·ℓ, and ℓ ≥ 1e-8 avoids the 0/0 at ℓ = 0.
    """
    z = snr_value * err.clamp(min=1e-8)
    return z / torch.expm1(z)


@register("mapo", data="pairwise", needs_reference=False, trains="diffusion")
def mapo(
    policy_logps,
    ref_logps,
    scores,
    mask,
    lengths,
    *,
    beta: float = 0.1,
    snr_value: float = 0.5,
    num_train_timesteps: int = 1000,
) -> ObjectiveOutput:
    """MaPO (Hong et al. 2024, arXiv 2406.06424; mapo-t2i/mapo ``utils.py::compute_loss``), reference-free:

        L = mean(ℓ_w) − β·mean(log σ(T·[f(ℓ_w) − f(ℓ_l)])),   f(ℓ) = s·ℓ / (e^{s·ℓ} − 1)

    β = 0.1 (``--beta_mapo``), s = 0.5 (``--snr_value``), T = 1000 (``num_train_timesteps``). No reference
    model: no reference forward and no reference weights in memory.
    """
    err_w, err_l = _errors(policy_logps, scores, mask)
    log_odds = mapo_f(err_w, snr_value) - mapo_f(err_l, snr_value)
    margin = F.logsigmoid(num_train_timesteps * log_odds)
    loss = err_w.mean() - beta * margin.mean()
    metrics = _metrics(policy_logps, ref_logps, scores, mask, lengths, 1.0, num_train_timesteps * log_odds)
    metrics["mapo/margin"] = margin.mean().item()
    return ObjectiveOutput(loss, metrics)


@register("diffusion_sft", data="pairwise", needs_reference=False, trains="diffusion")
def diffusion_sft(policy_logps, ref_logps, scores, mask, lengths) -> ObjectiveOutput:
    """Supervised fine-tuning on the preferred images (the ``--sft`` baseline of Wallace et al. 2023):
    L = mean(ℓ_w), the plain denoising loss of the winners; the losers are not used."""
    err_w, err_l = _errors(policy_logps, scores, mask)
    metrics = _metrics(policy_logps, ref_logps, scores, mask, lengths, 1.0, (err_l - err_w).detach())
    return ObjectiveOutput(err_w.mean(), metrics)
