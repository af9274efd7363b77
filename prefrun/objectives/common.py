"""Shared tensor helpers for objectives: picking chosen/rejected, pair masks, the core metrics.

Conventions: every tensor is [B, K]; ``mask`` marks real
list entries (False = padding); ``scores`` are higher-is-better; log-probs are summed over response
tokens and ``lengths`` holds the response token counts.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def best_worst_index(scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [B] of the highest- and lowest-scored real entries of each list (first one on ties)."""
    best = scores.masked_fill(~mask, NEG_INF).argmax(dim=1)
    worst = scores.masked_fill(~mask, float("inf")).argmin(dim=1)
    return best, worst


def chosen_rejected(
    values: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` [B, K] at the best and the worst entry of each list: (chosen [B], rejected [B])."""
    best, worst = best_worst_index(scores, mask)
    return values.gather(1, best[:, None])[:, 0], values.gather(1, worst[:, None])[:, 0]


def log_ratios(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ρ_w [B], ρ_l [B]): summed log-ratios log π_θ − log π_ref of the chosen and the rejected response."""
    return chosen_rejected(policy_logps - ref_logps, scores, mask)


def preference_pairs(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bool [B, K, K]: entry (i, j) is True when response i is strictly preferred to j (ties dropped)."""
    valid = mask[:, :, None] & mask[:, None, :]
    return valid & (scores[:, :, None] > scores[:, None, :])


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the True entries of ``mask`` (0 when there are none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def core_metrics(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    beta: float = 1.0,
) -> dict[str, float]:
    """The metrics every objective logs under the same names, so any two runs line up.

    chosen = the best-scored response of each list, rejected = the worst. Rewards are the implicit
    rewards β·(log π − log π_ref) (β·log π for reference-free objectives, whose ref_logps are 0).
    """
    with torch.no_grad():
        rewards = beta * (policy_logps - ref_logps)
        r_w, r_l = chosen_rejected(rewards, scores, mask)
        lp_w, lp_l = chosen_rejected(policy_logps, scores, mask)
        len_w, len_l = chosen_rejected(lengths.to(policy_logps.dtype), scores, mask)
        return {
            "rewards/chosen": r_w.mean().item(),
            "rewards/rejected": r_l.mean().item(),
            "rewards/margins": (r_w - r_l).mean().item(),
            "rewards/accuracies": (r_w > r_l).float().mean().item(),
            "logps/chosen": lp_w.mean().item(),
            "logps/rejected": lp_l.mean().item(),
            "lengths/chosen": len_w.mean().item(),
            "lengths/rejected": len_l.mean().item(),
        }
