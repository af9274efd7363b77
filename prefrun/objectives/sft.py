"""Supervised fine-tuning on the best response of each list, as an objective."""

from __future__ import annotations

from prefrun.objectives.common import chosen_rejected, core_metrics
from prefrun.objectives.registry import ObjectiveOutput, register


@register("sft", data="list", needs_reference=False, min_k=1)
def sft(policy_logps, ref_logps, scores, mask, lengths) -> ObjectiveOutput:
    """SFT on the best-scored response: L = −Σ_t log π_θ(y*_t) / Σ|y*| (token-mean NLL over the batch).

    The token-mean matches TRL's ``loss_type="sft"``; reference-free.
    """
    logp_best, _ = chosen_rejected(policy_logps, scores, mask)
    len_best, _ = chosen_rejected(lengths.to(policy_logps.dtype), scores, mask)
    loss = -logp_best.sum() / len_best.sum().clamp(min=1)
    return ObjectiveOutput(loss, core_metrics(policy_logps, ref_logps, scores, mask, lengths))
