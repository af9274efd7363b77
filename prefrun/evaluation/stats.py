"""Statistics of the evaluators: win rates, bootstrap intervals, AlpacaEval's length-controlled win rate.

A comparison of policy and reference on one prompt gives an outcome y ∈ [0, 1]: 1 when the policy wins,
0 when it loses, ½ for a tie (or a judge's probability that the policy wins). The win rate is the mean
outcome over prompts; its 95% interval is the percentile bootstrap over prompts (Efron & Tibshirani 1993,
ch. 13). Scores that could not be computed are NaN: they are counted and left out, never averaged in.

Length-controlled win rate (Dubois et al. 2024, arXiv 2404.04475, eq. 2 without the instruction-difficulty
term, AlpacaEval's ``length_controlled_minimal``): fit

    logit y_x = θ + φ · tanh(Δlen_x / std(Δlen)),     Δlen_x = len(reference text) − len(policy text)

by maximum likelihood with soft labels (each prompt a row of label 1 weighted y_x and a row of label 0
weighted 1 − y_x), then LC = mean_x σ(θ) = σ(θ): the win rate the judge would give at equal lengths.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch

log = logging.getLogger("prefrun")

NAN_WARN_RATE = 0.01  # a warning when more than this fraction of scores is NaN


def _tensor(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).flatten()


def outcomes(policy: Sequence[float] | torch.Tensor, reference: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Per comparison: 1 where policy > reference, ½ where equal, 0 where below; NaN where either is NaN."""
    a, b = _tensor(policy), _tensor(reference)
    y = (a > b).double() + 0.5 * (a == b).double()
    return torch.where(a.isnan() | b.isnan(), torch.full_like(y, math.nan), y)


def win_rate(policy: Sequence[float] | torch.Tensor, reference: Sequence[float] | torch.Tensor) -> float:
    """Share of comparisons the policy wins, ties counting ½, over the comparisons with both scores finite."""
    y = outcomes(policy, reference)
    y = y[~y.isnan()]
    return float(y.mean()) if y.numel() else math.nan


def count_nan(values: Sequence[float] | torch.Tensor, what: str) -> int:
    """The number of NaN values; logs a warning naming ``what`` when they exceed NAN_WARN_RATE of all."""
    v = _tensor(values)
    n = int(v.isnan().sum())
    if v.numel() and n / v.numel() > NAN_WARN_RATE:
        log.warning(
            "%s: %d of %d scores are NaN (%.1f%%); metrics use the rest", what, n, v.numel(), 100 * n / v.numel()
        )
    return n


def nanmean(values: Sequence[float] | torch.Tensor) -> float:
    v = _tensor(values)
    v = v[~v.isnan()]
    return float(v.mean()) if v.numel() else math.nan


def quartiles(values: Sequence[float] | torch.Tensor) -> tuple[float, float, float]:
    """The 25%, 50% and 75% quantiles (linear interpolation between order statistics, numpy's default)."""
    v = _tensor(values)
    v = v[~v.isnan()]
    if not v.numel():
        return math.nan, math.nan, math.nan
    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return float(q[0]), float(q[1]), float(q[2])


def bootstrap_interval(
    values: Sequence[float] | torch.Tensor,
    *,
    statistic: Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (the mean by default) over the finite ``values``.

    Resamples the n values with replacement ``n_boot`` times (seeded) and returns the (1 − level)/2 and
    (1 + level)/2 quantiles of the resampled statistic. ``statistic`` maps [n_boot, n] to [n_boot].
    """
    v = _tensor(values)
    v = v[~v.isnan()]
    if not v.numel():
        return math.nan, math.nan
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(v.numel(), (n_boot, v.numel()), generator=generator)
    resampled = v[idx]
    stats = statistic(resampled) if statistic is not None else resampled.mean(dim=1)
    alpha = (1.0 - level) / 2
    q = torch.quantile(stats.double(), torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])


def length_feature(delta_len: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """tanh(Δlen / std(Δlen)) (sample std); zeros when every Δlen is equal (no length signal to fit)."""
    d = _tensor(delta_len)
    std = float(d.std()) if d.numel() > 1 else 0.0
    return torch.tanh(d / std) if std > 0 else torch.zeros_like(d)


def logistic_fit(x: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-8, steps: int = 100) -> tuple[float, float]:
    """(θ, φ) maximising Σ y log σ(θ + φx) + (1 − y) log σ(−θ − φx) − l2/2 (θ² + φ²), by Newton's method.

    The tiny ridge keeps the fit finite when the outcomes separate (every y = 1); the steps are damped
    (halved until the objective improves), so the iteration cannot overshoot.
    """
    features = torch.stack([torch.ones_like(x), x], dim=1)
    w = torch.zeros(2, dtype=torch.float64)

    def loss(w: torch.Tensor) -> torch.Tensor:
        z = features @ w
        return (torch.nn.functional.softplus(z) - y * z).sum() + 0.5 * l2 * (w @ w)

    current = loss(w)
    for _ in range(steps):
        p = torch.sigmoid(features @ w)
        grad = features.T @ (p - y) + l2 * w
        hess = features.T @ (features * (p * (1 - p))[:, None]) + l2 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-8:
            candidate = w - scale * step
            if (value := loss(candidate)) <= current:
                break
            scale /= 2
        else:
            break
        w, previous, current = candidate, current, value
        if float(grad.abs().max()) < 1e-10 or float(previous - current) < 1e-14:
            break
    return float(w[0]), float(w[1])


def length_controlled_win_rate(
    prefs: Sequence[float] | torch.Tensor, delta_len: Sequence[float] | torch.Tensor
) -> float:
    """AlpacaEval's LC win rate: σ(θ) of the soft-label logistic fit of y on tanh(Δlen/std(Δlen)).

    ``prefs``: per prompt, the probability that the policy's answer wins; ``delta_len``: len(reference)
    − len(policy) in characters. NaN preferences are left out.
    """
    y, d = _tensor(prefs), _tensor(delta_len)
    keep = ~y.isnan()
    y, d = y[keep], d[keep]
    if not y.numel():
        return math.nan
    theta, _ = logistic_fit(length_feature(d), y)
    return 1.0 / (1.0 + math.exp(-theta))
