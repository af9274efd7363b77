"""InfAlign's analytic calculator: inference-time win rate against KL on calibrated rewards.

Balashankar et al. 2024, "InfAlign: Inference-aware language model alignment" (arXiv 2412.19792, ICML 2025).

**Calibration.** C(x, y) = P_{z ~ π_ref(·|x)}[r(x, z) < r(x, y)] + ½ P[r(x, z) = r(x, y)], estimated from m
reference samples per prompt (``calibrate``: the mid-rank, so ties count ½). Under π_ref, C is uniform on
[0, 1] for a continuous reward, and invariant to any increasing rescaling of r. On calibrated rewards every
policy is a density g on [0, 1] against the base policy's uniform one.

**Best-of-N of the base policy** (Beirami et al. 2024, arXiv 2401.01879): BoN_N(U) has density N u^{N−1}, so

    win rate(BoN_N ≻ π_ref) = N / (N + 1),       KL(BoN_N ‖ π_ref) = log N − (N − 1) / N

(exact on a continuous reward, an upper bound on a discrete one). ``bon_plugin_kl`` is the plug-in estimate
E_{y ~ BoN}[log N + (N − 1) log C(y)] of that KL from calibrated samples.

**Calibrate-and-transform (CTRL).** For a transform Φ, the KL-regularised optimum of E Φ(C) − β KL is the
exponential tilt g_λ(u) = exp(λ Φ(u)) / Z(λ) on [0, 1], λ = 1/β (InfAlign's Theorem: for any inference-time
procedure T the optimum has this form for some Φ that depends on T). Transforms:

    identity  Φ(u) = u                  standard win rate (N = 1)
    exp       Φ(u) = exp(t u)           best-of-N (t grows with N)
    neg_exp   Φ(u) = −exp(−t u)         worst-of-N ("BoN jailbreaking")
    log       Φ(u) = log u              g ∝ u^λ: the BoN-distilled policy family

    KL(g_λ ‖ U) = λ E_g[Φ] − log Z(λ)
    best-of-N win rate   W_N = P(BoN_N(g) ≻ BoN_N(U)) = ∫ N g(u) G(u)^{N−1} · u^N du
    worst-of-N win rate  W_N = P(WoN_N(g) ≻ WoN_N(U)) = ∫ N g(u) (1 − G(u))^{N−1} · (1 − (1 − u)^N) du

G the CDF of g. λ is solved (bisection) to a KL budget, so transforms are compared at matched KL(g ‖ U):
the paper's win-rate-vs-KL curves. The integrals use the midpoint rule on 2^16 cells. Φ is affinely
rescaled to [0, 1] first (the tilt family is unchanged, λ only rescales), so exp(t u) with t = 10 stays
finite. At KL = 0.5: identity is best at N = 1 (0.774), exp(t = 10) at N = 4 (0.871 vs identity 0.800),
and −exp(−5u) beats identity for worst-of-4 (0.944 vs 0.886). ``python -m prefrun.evaluation.infalign``
prints the table.

``pool_weights`` is the tilt without training: resample each prompt's M reference samples with weights
∝ exp(Φ(C)/β) (``pool_kl`` is its KL from π_ref).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from prefrun.errors import PrefrunError

CELLS = 1 << 16
U = (np.arange(CELLS) + 0.5) / CELLS  # midpoints: log u stays finite
H = 1.0 / CELLS

TRANSFORMS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "identity": lambda u, t: u,
    "exp": lambda u, t: np.exp(t * u),
    "neg_exp": lambda u, t: -np.exp(-t * u),
    "log": lambda u, t: np.log(u),
}
MODES = ("best", "worst")


def bon_win_rate(n: int) -> float:
    """P(BoN_n of π_ref ≻ π_ref) on a continuous reward: n / (n + 1)."""
    return n / (n + 1.0)


def bon_kl(n: int) -> float:
    """KL(BoN_n ‖ π_ref) = log n − (n − 1)/n: exact on a continuous reward, an upper bound with ties."""
    return math.log(n) - (n - 1.0) / n


def bon_plugin_kl(calibrated: Sequence[float] | np.ndarray, n: int) -> float:
    """E_{y ~ BoN}[log n + (n − 1) log C(y)] over calibrated rewards C of best-of-n samples."""
    c = np.asarray(calibrated, dtype=float)
    return float(np.mean(math.log(n) + (n - 1) * np.log(c)))


def _phi(transform: str, t: float) -> np.ndarray:
    """Φ on the grid, affinely rescaled to [0, 1] where bounded (the tilt family does not change)."""
    if transform not in TRANSFORMS:
        raise PrefrunError(f"infalign: transform={transform!r} must be one of {', '.join(TRANSFORMS)}")
    if transform in ("exp", "neg_exp") and t <= 0:
        raise PrefrunError(f"infalign: t={t} must be > 0 for transform={transform}")
    phi = TRANSFORMS[transform](U, t)
    return phi if transform == "log" else (phi - phi.min()) / (phi.max() - phi.min())


def _density(phi: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """(g on the grid, KL(g ‖ U)) for g ∝ exp(λ Φ)."""
    z = lam * phi
    log_g = z - (z.max() + math.log(np.sum(np.exp(z - z.max())) * H))
    g = np.exp(log_g)
    return g, float(np.sum(g * log_g) * H)


def tilt(transform: str, kl: float, t: float = 1.0) -> np.ndarray:
    """The tilted density g_λ ∝ exp(λ Φ(u)) on the grid ``U`` whose KL(g ‖ U) is ``kl`` (λ by bisection)."""
    if not kl >= 0:
        raise PrefrunError(f"infalign: kl={kl} must be ≥ 0")
    phi = _phi(transform, t)
    lo, hi = 0.0, 1.0
    while _density(phi, hi)[1] < kl:
        lo, hi = hi, 2.0 * hi
        if hi > 1e6:
            raise PrefrunError(f"infalign: kl={kl} is beyond what transform={transform} reaches on the grid")
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _density(phi, mid)[1] < kl else (lo, mid)
    return _density(phi, 0.5 * (lo + hi))[0]


def win_rate(transform: str, kl: float, n: int = 1, *, t: float = 1.0, mode: str = "best") -> float:
    """Inference-time win rate of best- (or worst-) of-n of the tilted policy at KL ``kl`` over that of π_ref."""
    if n < 1:
        raise PrefrunError(f"infalign: n={n} must be ≥ 1 (samples per best-of-n)")
    if mode not in MODES:
        raise PrefrunError(f"infalign: mode={mode!r} must be one of {', '.join(MODES)}")
    g = tilt(transform, kl, t)
    cdf = np.cumsum(g) * H - 0.5 * g * H  # G at the midpoints
    if mode == "best":
        return float(np.sum(n * g * cdf ** (n - 1) * U**n) * H)
    return float(np.sum(n * g * (1.0 - cdf) ** (n - 1) * (1.0 - (1.0 - U) ** n)) * H)


def curve(transform: str, kls: Sequence[float], n: int = 1, *, t: float = 1.0, mode: str = "best") -> list[float]:
    """Win rate against KL: ``win_rate`` at each budget in ``kls``."""
    return [win_rate(transform, kl, n, t=t, mode=mode) for kl in kls]


def calibrate(rewards: Sequence | np.ndarray, reference_rewards: Sequence | np.ndarray) -> np.ndarray:
    """Per prompt, the mid-rank of each reward among that prompt's m reference rewards.

    ``rewards`` [B] or [B, K], ``reference_rewards`` [B, m]: C = (#{z < r} + ½ #{z = r}) / m, in [0, 1]. Ties count
    ½ so that the mean of C over a policy's samples is its win rate against π_ref (ties ½), also on a discrete
    reward. NaN rewards give NaN; NaN reference rewards are left out of that prompt's m.
    """
    r = np.asarray(rewards, dtype=float)
    ref = np.asarray(reference_rewards, dtype=float)
    squeeze = r.ndim == 1
    r = r[:, None] if squeeze else r
    if r.ndim != 2 or ref.ndim != 2 or ref.shape[0] != r.shape[0]:
        raise PrefrunError(
            f"calibrate: rewards {r.shape} and reference_rewards {ref.shape} must be [B] or [B, K] and [B, m]"
        )
    valid = ~np.isnan(ref)
    m = valid.sum(axis=1)
    if ref.shape[1] == 0 or (m == 0).any():
        raise PrefrunError("calibrate: a prompt has no finite reference reward; draw m ≥ 1 reference samples each")
    below = ((ref[:, None, :] < r[:, :, None]) & valid[:, None, :]).sum(axis=2)
    equal = ((ref[:, None, :] == r[:, :, None]) & valid[:, None, :]).sum(axis=2)
    c = (below + 0.5 * equal) / m[:, None]
    c[np.isnan(r)] = np.nan
    return c[:, 0] if squeeze else c


def pool_weights(
    calibrated: Sequence | np.ndarray, transform: str = "identity", *, beta: float = 1.0, t: float = 1.0
) -> np.ndarray:
    """[B, M] resampling weights ∝ exp(Φ(C)/β) over each prompt's M reference samples (the tilted pool).

    Drawing from the M samples with these weights is the CTRL policy π_ref · exp(Φ(C)/β) / Z without training,
    exactly as M → ∞; Φ is the raw transform here (not rescaled), so β is on Φ's own scale.
    """
    if transform not in TRANSFORMS:
        raise PrefrunError(f"infalign: transform={transform!r} must be one of {', '.join(TRANSFORMS)}")
    if beta <= 0:
        raise PrefrunError(f"infalign: beta={beta} must be > 0")
    c = np.clip(np.asarray(calibrated, dtype=float), 1e-12, 1.0)  # log u needs u > 0
    z = TRANSFORMS[transform](c, t) / beta
    z = z - z.max(axis=-1, keepdims=True)
    w = np.exp(z)
    return w / w.sum(axis=-1, keepdims=True)


def pool_kl(weights: Sequence | np.ndarray) -> float:
    """Mean over prompts of KL(w ‖ uniform) = Σ_i w_i log(M w_i): the tilted pool's KL from π_ref."""
    w = np.asarray(weights, dtype=float)
    terms = np.where(w > 0, w * np.log(np.where(w > 0, w * w.shape[-1], 1.0)), 0.0)
    return float(terms.sum(axis=-1).mean())


ROWS = ((1, 0.5), (2, 0.5), (4, 0.5), (8, 0.5), (4, 1.0))  # (N, KL) of the table that main prints
COLUMNS = (("identity", 1.0), ("log", 1.0), ("exp", 1.0), ("exp", 3.0), ("exp", 5.0), ("exp", 10.0))


def main() -> None:
    """Print the best-of-N win-rate table at matched KL and the worst-of-4 comparison (markdown)."""
    print("| N | KL | " + " | ".join(f"{name}" + (f" t={t:g}" if name == "exp" else "") for name, t in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for n, kl in ROWS:
        cells = [f"{win_rate(name, kl, n, t=t):.3f}" for name, t in COLUMNS]
        print(f"| {n} | {kl} | " + " | ".join(cells) + " |")
    worst = [("identity", 1.0), ("neg_exp", 5.0), ("neg_exp", 10.0)]
    cells = ", ".join(f"{name} t={t:g}: {win_rate(name, 0.5, 4, t=t, mode='worst'):.3f}" for name, t in worst)
    print(f"\nworst-of-4 at KL 0.5: {cells}")
    print("BoN of π_ref: " + ", ".join(f"N={n}: W={bon_win_rate(n):.3f} KL={bon_kl(n):.3f}" for n in (2, 4, 8, 16)))


if __name__ == "__main__":
    main()
