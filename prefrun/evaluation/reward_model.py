"""Evaluation of a trained reward model on held-out scored lists: accuracy, calibration, rank correlation.

For held-out lists (prompt, K responses, labels ψ) and the model's rewards r of every response:

    pair accuracy   mean over held-out pairs (w, l) of [r_w > r_l] + ½ [r_w = r_l]; the pairs are formed as
                    training formed them (``dataset.pairs``: best_worst, all, ...), tied ψ dropped
    all-pairs acc.  the same over every untied pair of each list (K > 2 only)
    ECE             expected calibration error of p = σ(r_w − r_l) (Guo et al. 2017, arXiv 1706.04599, eq. 3,
                    with the Bradley–Terry probability as the prediction): each held-out pair enters in both
                    orders, (p, y = 1) and (1 − p, y = 0), so the outcome is not always 1; M equal-width bins
                    of [0, 1],  ECE = Σ_m (|B_m| / N) · |mean_{B_m} y − mean_{B_m} p|
    Spearman        per list, Spearman's ρ between the rewards and the truth (the synthetic task's oracle, or
                    the lists' own labels), ranks of ties averaged; the mean over lists where neither is
                    constant (the others are counted, not averaged in)

Every figure is computed on float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from prefrun.data.pairs import PAIR_MODES


def held_out_pairs(scores: Sequence[float], mode: str) -> list[tuple[int, int]]:
    """(winner, loser) indices of one list's pairs by ``mode`` (dataset.pairs), tied labels dropped."""
    return [
        (i, j) if scores[i] > scores[j] else (j, i) for i, j in PAIR_MODES[mode](list(scores)) if scores[i] != scores[j]
    ]


def pair_margins(rewards: Sequence[Sequence[float]], labels: Sequence[Sequence[float]], mode: str) -> torch.Tensor:
    """r_w − r_l of every held-out pair of every list (float64 [N])."""
    out = [rewards[b][i] - rewards[b][j] for b in range(len(labels)) for i, j in held_out_pairs(labels[b], mode)]
    return torch.tensor(out, dtype=torch.float64)


def accuracy(margins: torch.Tensor) -> float:
    """Share of pairs ranked right, ties counting ½."""
    if not margins.numel():
        return math.nan
    return float(((margins > 0).double() + 0.5 * (margins == 0).double()).mean())


def expected_calibration_error(margins: torch.Tensor, bins: int = 10) -> float:
    """ECE of p = σ(margin) with both orders of each pair (see the module docstring), ``bins`` equal-width bins."""
    if not margins.numel():
        return math.nan
    p = torch.sigmoid(margins.double())
    probs = torch.cat([p, 1 - p])
    outcome = torch.cat([torch.ones_like(p), torch.zeros_like(p)])
    which = (probs * bins).floor().clamp(max=bins - 1).long()  # p = 1 falls in the last bin
    total = probs.new_zeros(())
    for m in range(bins):
        in_bin = which == m
        if in_bin.any():
            total += in_bin.double().mean() * (outcome[in_bin].mean() - probs[in_bin].mean()).abs()
    return float(total)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``values`` [n] ascending, tied values sharing the mean of their ranks."""
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    for v in torch.unique(values):
        tied = values == v
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the average ranks; NaN when either side is constant."""
    rx, ry = average_ranks(torch.tensor(x, dtype=torch.float64)), average_ranks(torch.tensor(y, dtype=torch.float64))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum()) / denominator if denominator > 0 else math.nan


def mean_spearman(rewards: Sequence[Sequence[float]], truth: Sequence[Sequence[float]]) -> tuple[float, int, int]:
    """(mean ρ over the lists where it is defined, lists averaged, lists skipped: constant rewards or truth)."""
    values = [spearman(r, t) for r, t in zip(rewards, truth) if len(r) >= 2]
    defined = [v for v in values if not math.isnan(v)]
    mean = sum(defined) / len(defined) if defined else math.nan
    return mean, len(defined), len(values) - len(defined) + sum(len(r) < 2 for r in rewards)


def reward_model_metrics(
    rewards: Sequence[Sequence[float]],
    records: Sequence[dict[str, Any]],
    *,
    pairs: str = "best_worst",
    truth: Sequence[Sequence[float]] | None = None,
    truth_name: str = "labels",
    bins: int = 10,
) -> dict[str, Any]:
    """The held-out figures of a reward model's ``rewards`` (one list per record) on ``records``' labels.

    ``truth``: the values Spearman's ρ compares with (the oracle's rewards on a synthetic task; default the
    records' own scores), named ``truth_name``.
    """
    labels = [list(r["scores"]) for r in records]
    margins = pair_margins(rewards, labels, pairs)
    lists_k = sorted({len(r) for r in labels})
    out: dict[str, Any] = {
        "lists": len(records),
        "k": lists_k[0] if len(lists_k) == 1 else lists_k,
        "pairs_mode": pairs,
        "pairs": int(margins.numel()),
        "accuracy": accuracy(margins),
        "margin_mean": float(margins.mean()) if margins.numel() else math.nan,
        "ece": expected_calibration_error(margins, bins),
        "ece_bins": bins,
    }
    if max(lists_k) > 2:
        every = pair_margins(rewards, labels, "all")
        out.update(all_pairs=int(every.numel()), all_pairs_accuracy=accuracy(every))
        out["all_pairs_ece"] = expected_calibration_error(every, bins)
        rho, used, skipped = mean_spearman(rewards, truth if truth is not None else labels)
        out.update(spearman=rho, spearman_vs=truth_name, spearman_lists=used, spearman_skipped=skipped)
    return out


def summary_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of the printed summary."""
    rows = [
        (f"held-out pairs ({m['pairs_mode']})", str(m["pairs"])),
        ("pair accuracy", f"{m['accuracy']:.3f}"),
        (f"calibration (ECE, {m['ece_bins']} bins)", f"{m['ece']:.3f}"),
    ]
    if "all_pairs" in m:
        rows.append((f"all-pairs accuracy (K={m['k']})", f"{m['all_pairs_accuracy']:.3f}"))
        rows.append((f"Spearman vs {m['spearman_vs']} ({m['spearman_lists']} lists)", f"{m['spearman']:.3f}"))
    return rows + user_summary_rows(m)


# ---------------------------------------------------------------- users (pluralistic data, PAL)


def per_user_metrics(
    rewards: Sequence[Sequence[float]],
    records: Sequence[dict[str, Any]],
    classes: dict[str, set[str]],
    *,
    pairs: str = "best_worst",
) -> dict[str, Any]:
    """Held-out pair accuracy per user (records with a ``user``) and its mean and minimum over each class of
    users in ``classes`` ({"seen": users the model trained on, "adapted": ...}); users in none of them are
    "unseen". A user's accuracy is over that user's own held-out pairs; the means weigh every user alike.
    """
    by_user: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r.get("user") is not None:
            by_user.setdefault(str(r["user"]), []).append(i)
    per_user = {
        u: accuracy(pair_margins([rewards[i] for i in idx], [records[i]["scores"] for i in idx], pairs))
        for u, idx in sorted(by_user.items())
    }
    out: dict[str, Any] = {"user_accuracy": per_user}
    named = set().union(*classes.values()) if classes else set()
    for name, members in {**classes, "unseen": set(per_user) - named}.items():
        users = [u for u in per_user if u in members]
        values = [per_user[u] for u in users if not math.isnan(per_user[u])]
        out[f"{name}_users"] = len(users)
        out[f"{name}_user_accuracy"] = sum(values) / len(values) if values else math.nan
        out[f"{name}_user_accuracy_min"] = min(values) if values else math.nan
    return out


def mixture_purity(weights: dict[str, Sequence[float]], groups: dict[str, int]) -> dict[str, Any]:
    """Purity of the users' mixture weights against their true groups: each user assigned to its largest
    prototype (argmax_k w_uk), purity = (1/N) Σ_k max_g |{u : k(u) = k, g(u) = g}| over the N users with a
    known group (Manning et al. 2008, Introduction to IR, eq. 16.1). One prototype gives the largest group's
    share; 1.0 = every prototype holds users of one group only."""
    users = [u for u in weights if u in groups]
    if not users:
        return {"purity": math.nan, "purity_users": 0}
    counts: dict[int, dict[int, int]] = {}
    for u in users:
        k = max(range(len(weights[u])), key=lambda j: weights[u][j])
        counts.setdefault(k, {}).setdefault(int(groups[u]), 0)
        counts[k][int(groups[u])] += 1
    purity = sum(max(c.values()) for c in counts.values()) / len(users)
    return {"purity": purity, "purity_users": len(users), "purity_clusters": len(counts)}


def user_summary_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of the users' figures, where present."""
    rows = []
    for name in ("seen", "adapted", "unseen"):
        if m.get(f"{name}_users"):
            label = f"{name} users ({m[f'{name}_users']}): accuracy (min)"
            rows.append((label, f"{m[f'{name}_user_accuracy']:.3f} ({m[f'{name}_user_accuracy_min']:.2f})"))
    if "purity" in m and m.get("purity_users"):
        rows.append((f"mixture purity ({m['purity_users']} users)", f"{m['purity']:.3f}"))
    return rows
