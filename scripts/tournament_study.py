"""Tournament schedules at equal judge budget, on simulated players of known strength.

    .venv/bin/python scripts/tournament_study.py            # 200 repeats (Spearman), 100 (coverage); ~1 min CPU
    .venv/bin/python scripts/tournament_study.py --quick    # 40 / 20 repeats, ~15 s

N = 16 players with true strengths s_i ~ N(0, 1) in natural log-odds (Elo 1000 + 400·s_i/ln 10), drawn
afresh per repeat; per-prompt answer noise ε ~ N(0, 1) per player (prefrun.evaluation.simulated_players);
an unbiased judge asked once per match (``swap=fixed``), so a budget of 480 calls buys 32 prompts of a
bracket or of the anchored schedule (15 matches each) and 4 prompts of a round robin (120 matches each).

(a) Spearman of the fitted ratings (prefrun.evaluation.tournament.rate) with the true strengths, mean ± std
    over repeats, at 240, 480 and 960 calls.
    Then the same at 480 calls against a judge with a first-position bias b = 1, asked once (``fixed``: the
    shown order is random, so the bias only adds noise) or in both orders (``both``: half the matches).
(b) Coverage of the 95% bootstrap intervals: the fraction of (repeat, player) whose true rating lies inside
    its interval, both centred to mean 1000 (rate's anchor). The true ratings are only defined where the
    Bradley–Terry model holds, so the primary row has no per-prompt noise (the judge is BT with the true
    ratings). The second row keeps the noise, which flattens every win probability (E σ(Δ + η) with
    η ~ N(0, 2)), and takes as truth the population BT ratings: the BT fit to the exact all-pairs win
    probabilities (Gauss–Hermite), the ratings an endless round robin converges to; it is given twice, with
    matches resampled (FastChat) and with whole prompts resampled (rate's ``groups``, a cluster bootstrap).

Measured (full run, about 1 min CPU): Spearman at 480 calls 0.893 / 0.863 / 0.814 (bracket / anchored /
round robin; the research notes' 0.897 / 0.857 / 0.820); coverage 0.936 / 0.915 / 0.939 with the BT judge;
with per-prompt noise 0.93 / 0.93 for bracket and anchored but 0.76 (matches) or 0.79 (prompts) for the round
robin, whose 4 prompts cannot show the prompt-to-prompt variation that its ratings carry.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # 16×16 systems: BLAS threads only contend (5× slower here)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from prefrun.evaluation.simulated_players import SimulatedPlayers  # noqa: E402
from prefrun.evaluation.tournament import ELO_BASE, ELO_SCALE, SCHEDULES, SWAPS, fit_strengths, matches_per_prompt, rate  # noqa: E402

N_PLAYERS, NOISE, BIAS = 16, 1.0, 1.0
BUDGETS = (240, 480, 960)
COVERAGE_BUDGET = 480
PLAYERS = [f"p{i:02d}" for i in range(N_PLAYERS)]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ with average ranks: the anchored schedule ties players with equal records."""
    return float(spearmanr(x, y).statistic)


def population_elo(strengths: np.ndarray, noise: float) -> np.ndarray:
    """Elo (mean 1000) of the BT fit to P(i ≻ j) = E σ(s_i − s_j + η), η ~ N(0, 2 noise²), all pairs once."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)  # ∫ f(x) φ(x) dx ≈ Σ w f(x) / √(2π)
    pairs = np.array([(i, j) for i in range(len(strengths)) for j in range(i)])
    gap = strengths[pairs[:, 0]] - strengths[pairs[:, 1]]
    eta = np.sqrt(2.0) * noise * nodes
    p = (weights / np.sqrt(2 * np.pi)) @ (1.0 / (1.0 + np.exp(-(gap[None] + eta[:, None]))))
    r = fit_strengths(len(strengths), pairs, p[None], np.ones((1, len(pairs))), l2=0.0)[0]
    return ELO_SCALE * r + ELO_BASE


def one(
    schedule: str,
    budget: int,
    rep: int,
    noise: float,
    bootstrap: int,
    by_prompt: bool = False,
    swap: str = "fixed",
    bias: float = 0.0,
) -> tuple[float, float, int]:
    """(Spearman, coverage, judge calls) of one seeded tournament; coverage NaN when bootstrap = 0."""
    rng = np.random.default_rng(10_000 + rep)
    strengths = rng.normal(0.0, 1.0, N_PLAYERS)
    true_elo = ELO_SCALE * strengths + ELO_BASE
    sim = SimulatedPlayers(dict(zip(PLAYERS, true_elo)), noise=noise, position_bias=bias, seed=rep)
    matches, calls = SCHEDULES[schedule](PLAYERS, sim.judges(), budget, swap=swap, seed=rep)
    groups = np.arange(len(matches)) // matches_per_prompt(schedule, N_PLAYERS) if by_prompt else None
    ratings = rate(matches, bootstrap=bootstrap, seed=rep, groups=groups)
    fitted = np.array([ratings[p][0] for p in PLAYERS])
    coverage = float("nan")
    if bootstrap:
        truth = population_elo(strengths, noise) if noise else true_elo - true_elo.mean() + ELO_BASE
        low, high = (np.array([ratings[p][k] for p in PLAYERS]) for k in (1, 2))
        coverage = float(np.mean((low <= truth) & (truth <= high)))
    return spearman(fitted, strengths), coverage, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 / 20 repeats instead of 200 / 100")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per fit (coverage)")
    args = parser.parse_args()
    reps, cover_reps = (40, 20) if args.quick else (200, 100)
    start = time.process_time()

    print(f"## Spearman with the true strengths (N={N_PLAYERS}, per-prompt noise sd {NOISE}, {reps} repeats)\n")
    print(f"mean ± std over repeats (standard error of the mean: std / {np.sqrt(reps):.1f})\n")
    print("| judge calls | " + " | ".join(SCHEDULES) + " |")
    print("|---" * (len(SCHEDULES) + 1) + "|")
    for budget in BUDGETS:
        cells = []
        for name in SCHEDULES:
            rho = [one(name, budget, rep, NOISE, 0)[0] for rep in range(reps)]
            cells.append(f"{np.mean(rho):.3f} ± {np.std(rho):.3f}")
        print(f"| {budget} | " + " | ".join(cells) + " |")

    print(f"\n## Swap protocols at 480 calls against a judge with first-position bias b = {BIAS} ({reps} repeats)\n")
    print("| judge, swap | " + " | ".join(SCHEDULES) + " |")
    print("|---" * (len(SCHEDULES) + 1) + "|")
    for bias, swap in ((BIAS, "fixed"), (BIAS, "both")):
        cells = []
        for name in SCHEDULES:
            rho = [one(name, 480, rep, NOISE, 0, swap=swap, bias=bias)[0] for rep in range(reps)]
            cells.append(f"{np.mean(rho):.3f} ± {np.std(rho):.3f}")
        print(f"| b={bias:g}, swap={swap} ({480 // SWAPS[swap]} matches) | " + " | ".join(cells) + " |")

    print(f"\n## Coverage of the 95% bootstrap intervals ({COVERAGE_BUDGET} calls, {cover_reps} repeats × 16 players,")
    print(f"{args.bootstrap} resamples)\n")
    print("| judge | " + " | ".join(SCHEDULES) + " |")
    print("|---" * (len(SCHEDULES) + 1) + "|")
    rows = (
        (0.0, False, "BT judge, no noise; matches resampled (truth: true ratings)"),
        (NOISE, False, "noise sd 1; matches resampled (truth: population BT)"),
        (NOISE, True, "noise sd 1; prompts resampled (truth: population BT)"),
    )
    for noise, by_prompt, label in rows:
        cells = []
        for name in SCHEDULES:
            cov = [one(name, COVERAGE_BUDGET, rep, noise, args.bootstrap, by_prompt)[1] for rep in range(cover_reps)]
            cells.append(f"{np.mean(cov):.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nCPU time: {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
