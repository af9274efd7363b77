"""Tournaments: pairwise matches between players (runs, decoders) pooled into Bradley–Terry ratings.

**The fit** (``rate``) is FastChat's maximum-likelihood Elo (``fastchat/serve/monitor/elo_analysis.py``,
``compute_mle_elo``; Chiang et al. 2024, Chatbot Arena, arXiv 2403.04132). Each match (a, b, o) has an outcome
o ∈ [0, 1]: 1 when a wins, 0 when b wins, ½ for a tie (FastChat counts a tie as half a win each way; a
judge's probability that a wins is also accepted). With natural log-odds strengths r,

    P(a ≻ b) = σ(r_a − r_b),     maximise  Σ_matches [o log σ(r_a − r_b) + (1 − o) log σ(r_b − r_a)] − l2 · Σ_i r_i²

and Elo_i = 400 · r_i / ln 10 + 1000 (FastChat's 400·log10 scale; a 400-point gap is 10:1 odds). The
ratings are anchored so that their mean is 1000, or, with ``anchor=<player>``, so that player is at 1000
(FastChat pins a named baseline model the same way). FastChat solves the unpenalised problem by
logistic regression; prefrun solves it by Newton's method on the pair counts, with a weak Gaussian prior
r_i ~ N(0, 1/(2·l2)): ``l2`` = 0.01 is a prior sd of about 1230 Elo. It keeps ratings finite when a
player wins, or loses, every match it plays (the MLE is then at infinity, FastChat's L-BFGS stops at its
iteration cap, and one such player drags the mean anchor, and so every rating, with it); with hundreds of
matches it moves ratings by a few Elo. ``l2=0`` is the exact MLE.

**Intervals**: percentile bootstrap over matches (FastChat's ``get_bootstrap_result``): ``bootstrap``
resamples of the match list with replacement (multinomial counts), each refitted and anchored the same
way; (low, high) are the 2.5 and 97.5 percentiles. With ``bootstrap=0`` they are NaN. ``groups`` (one label
per match, e.g. its prompt) makes it a cluster bootstrap: whole groups are resampled, which also carries the
per-prompt variation of answers' quality that resampling matches ignores (matches on one prompt share it).

**Schedules** turn players, per-prompt judges and a budget of judge calls into matches (Son et al. 2024,
Varco Arena, arXiv 2411.01281):

- ``bracket``: per prompt a single-elimination bracket, random seeding, byes to fill up to a power of
  two; N − 1 matches per prompt for N players; a tied match advances a seeded coin's pick;
- ``anchored``: per prompt every player against one anchor player (the first by default): N − 1 matches;
- ``round_robin``: per prompt every pair: N (N − 1) / 2 matches.

Each schedule spends the budget on whole prompts, taking as many as fit (and as the judges last), and
returns the matches and the number of judge calls made. The order in which a pair is shown is random
(seeded), so no player sits in the first position systematically. ``swap`` says how a pair is judged:

- ``fixed``: one call in the shown order (1 call per match);
- ``random``: one call, the order flipped by a seeded coin and the verdict mapped back (1 call per match);
- ``both``: both orders, the two mapped-back verdicts averaged, so orders that disagree make a tie
  (2 calls per match; Auto-J's evaluation protocol, prefrun's ``reward.swap=both``).

Against a judge with a first-position bias, ``both`` removes it and halves the per-match variance at
twice the calls. A judge is any callable ``judge(first, second) -> outcome`` for one prompt, returning the
probability (or verdict 1, ½, 0) that the response shown first wins.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from prefrun.errors import PrefrunError

Match = tuple[str, str, float]
Judge = Callable[[str, str], float]

ELO_SCALE = 400.0 / math.log(10.0)  # Elo points per natural log-odds unit
ELO_BASE = 1000.0
L2 = 0.01  # prior sd 1/√(2·l2) ≈ 7.1 natural units ≈ 1230 Elo
SWAPS = {"fixed": 1, "random": 1, "both": 2}  # judge calls per match
MAX_STEPS = 100
MAX_STEP = 3.0  # natural units per Newton step: damps the first steps on near-separable data


def _encode(matches: Sequence[Match]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Players (first-seen order), the pairs (i < j) played, each match's pair index and i's share of the win."""
    if not matches:
        raise PrefrunError("tournament: no matches to rate; give at least one (player_a, player_b, outcome)")
    players: dict[str, int] = {}
    for m in matches:
        if len(m) != 3:
            raise PrefrunError(f"tournament: match {m!r} must be (player_a, player_b, outcome)")
        a, b, o = m
        if a == b:
            raise PrefrunError(f"tournament: match {m!r} pits {a!r} against itself; pair two different players")
        if not 0.0 <= float(o) <= 1.0:
            raise PrefrunError(f"tournament: outcome {o!r} of match {m!r} must lie in [0, 1] (1 a wins, ½ tie, 0)")
        players.setdefault(str(a), len(players))
        players.setdefault(str(b), len(players))
    if len(players) < 2:
        raise PrefrunError("tournament: matches name fewer than 2 players; a rating needs at least 2")
    pair_of: dict[tuple[int, int], int] = {}
    pair_index, share = np.empty(len(matches), dtype=np.int64), np.empty(len(matches))
    for k, (a, b, o) in enumerate(matches):
        i, j, o = players[str(a)], players[str(b)], float(o)
        if i > j:
            i, j, o = j, i, 1.0 - o
        pair_index[k] = pair_of.setdefault((i, j), len(pair_of))
        share[k] = o
    pairs = np.array(list(pair_of), dtype=np.int64).reshape(-1, 2)
    return list(players), pairs, pair_index, share


def _connected(n: int, pairs: np.ndarray) -> bool:
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[root(int(i))] = root(int(j))
    return len({root(x) for x in range(n)}) == 1


def fit_strengths(
    n: int, pairs: np.ndarray, wins: np.ndarray, counts: np.ndarray, *, l2: float = L2, start: np.ndarray | None = None
) -> np.ndarray:
    """[B, n] natural log-odds strengths (mean 0) maximising the penalised BT likelihood of each row.

    ``pairs`` [P, 2] (i, j); ``wins`` [B, P] i's wins over j (ties as ½), ``counts`` [B, P] matches played.
    Newton's method, batched over the B rows (the bootstrap replicates): the Hessian is the weighted graph
    Laplacian plus 2·l2·I; the mean-zero direction, flat when l2 = 0, is fixed by adding 11ᵀ/n. ``start``
    [n] warm-starts every row (the bootstrap starts at the point estimate: a few steps instead of ten).
    """
    wins, counts = np.atleast_2d(wins), np.atleast_2d(counts)
    incidence = np.zeros((len(pairs), n))
    incidence[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    incidence[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    outer = (incidence[:, :, None] * incidence[:, None, :]).reshape(len(pairs), n * n)  # a_p a_pᵀ per pair
    fixed = 2.0 * l2 * np.eye(n) + np.ones((n, n)) / n + 1e-12 * np.eye(n)
    r = np.zeros((wins.shape[0], n)) + (0.0 if start is None else start)
    for _ in range(MAX_STEPS):
        p = 1.0 / (1.0 + np.exp(-(r @ incidence.T)))  # [B, P] P(i ≻ j)
        grad = (wins - counts * p) @ incidence - 2.0 * l2 * r
        curvature = counts * p * (1.0 - p)
        hess = (curvature @ outer).reshape(-1, n, n) + fixed  # the negative Hessian: one GEMM for all rows
        step = np.clip(np.linalg.solve(hess, grad[..., None])[..., 0], -MAX_STEP, MAX_STEP)
        r += step
        r -= r.mean(axis=1, keepdims=True)
        if np.abs(step).max() < 1e-10:
            break
    return r


def _resamples(n_matches: int, groups: Sequence[object] | None, bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """[bootstrap, n_matches] multiplicities of each match: matches, or whole groups, drawn with replacement."""
    labels, cluster = (None, None) if groups is None else np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    k = n_matches if groups is None else len(labels)
    draws = rng.integers(0, k, (bootstrap, k)) + k * np.arange(bootstrap)[:, None]  # k draws per resample
    counts = np.bincount(draws.ravel(), minlength=bootstrap * k).reshape(bootstrap, k).astype(float)
    return counts if groups is None else counts[:, cluster]


def rate(
    matches: Sequence[Match],
    bootstrap: int = 1000,
    seed: int = 0,
    *,
    anchor: str | None = None,
    l2: float = L2,
    groups: Sequence[object] | None = None,
) -> dict[str, tuple[float, float, float]]:
    """{player: (Elo rating, 95% low, 95% high)} of the Bradley–Terry fit over ``matches`` (module docstring)."""
    players, pairs, pair_index, share = _encode(matches)
    n = len(players)
    if l2 <= 0 and not _connected(n, pairs):
        raise PrefrunError("tournament: the matches split the players into groups that never meet; set l2 > 0")
    if anchor is not None and anchor not in players:
        raise PrefrunError(f"tournament: anchor={anchor!r} plays no match; choose one of {', '.join(players)}")
    if bootstrap < 0:
        raise PrefrunError(f"tournament: bootstrap={bootstrap} must be ≥ 0 (resamples for the intervals)")
    if groups is not None and len(groups) != len(share):
        raise PrefrunError(f"tournament: groups has {len(groups)} labels for {len(share)} matches; give one each")
    onehot = np.zeros((len(share), len(pairs)))
    onehot[np.arange(len(share)), pair_index] = 1.0

    def elo(weights: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """[B, matches] multiplicities -> [B, n] anchored Elo ratings and the [B, n] strengths."""
        r = fit_strengths(n, pairs, weights @ (onehot * share[:, None]), weights @ onehot, l2=l2, start=start)
        ratings = ELO_SCALE * r
        shift = ratings[:, players.index(anchor)] if anchor is not None else ratings.mean(axis=1)
        return ratings - shift[:, None] + ELO_BASE, r

    point, strengths = elo(np.ones((1, len(share))))
    point = point[0]
    low = high = np.full(n, math.nan)
    if bootstrap:
        weights = _resamples(len(share), groups, bootstrap, np.random.default_rng(seed))
        low, high = np.percentile(elo(weights, strengths[0])[0], [2.5, 97.5], axis=0)
    return {p: (float(point[k]), float(low[k]), float(high[k])) for k, p in enumerate(players)}


def _judged(judge: Judge, a: str, b: str, swap: str, rng: random.Random) -> Match:
    """One match between a and b on one prompt: a's outcome under the ``swap`` protocol."""
    if swap == "both":
        return a, b, 0.5 * (float(judge(a, b)) + 1.0 - float(judge(b, a)))
    if swap == "random" and rng.random() < 0.5:
        return a, b, 1.0 - float(judge(b, a))
    return a, b, float(judge(a, b))


def _check(players: Sequence[str], budget: int, swap: str, per_prompt: int) -> int:
    """The number of whole prompts the budget pays for; errors for bad players, swap or budget."""
    if len(players) < 2:
        raise PrefrunError(f"tournament: {len(players)} player(s); a tournament needs at least 2")
    if len(set(players)) != len(players):
        raise PrefrunError(f"tournament: players {list(players)} repeat a name; give each player once")
    if swap not in SWAPS:
        raise PrefrunError(f"tournament.swap={swap!r} must be one of {', '.join(SWAPS)}")
    cost = per_prompt * SWAPS[swap]
    if budget < cost:
        raise PrefrunError(f"tournament.budget={budget} judge calls is below one prompt's {cost}; raise it")
    return budget // cost


def _play(
    players: Sequence[str],
    judges: Iterable[Judge],
    budget: int,
    swap: str,
    seed: int,
    per_prompt: int,
    pairings: Callable[[list[str], Judge, random.Random], list[Match]],
) -> tuple[list[Match], int]:
    prompts = _check(players, budget, swap, per_prompt)
    rng, matches = random.Random(seed), []
    for _, judge in zip(range(prompts), judges):
        matches += pairings(list(players), judge, rng)
    return matches, len(matches) * SWAPS[swap]


def _shown(a: str, b: str, rng: random.Random) -> tuple[str, str]:
    return (a, b) if rng.random() < 0.5 else (b, a)


def bracket(
    players: Sequence[str], judges: Iterable[Judge], budget: int, *, swap: str = "both", seed: int = 0
) -> tuple[list[Match], int]:
    """Single elimination per prompt (random seeding, byes up to a power of two): (matches, judge calls)."""

    def pairings(alive: list[str], judge: Judge, rng: random.Random) -> list[Match]:
        rng.shuffle(alive)
        byes = (1 << (len(alive) - 1).bit_length()) - len(alive)  # the first `byes` seeds skip round one
        played: list[Match] = []
        advanced, alive = alive[:byes], alive[byes:]
        while True:
            for a, b in zip(alive[0::2], alive[1::2]):
                match = _judged(judge, *_shown(a, b, rng), swap, rng)
                played.append(match)
                o = match[2]
                advanced.append(match[0] if o > 0.5 or (o == 0.5 and rng.random() < 0.5) else match[1])
            if len(advanced) == 1:
                return played
            alive, advanced = advanced, []

    return _play(players, judges, budget, swap, seed, len(players) - 1, pairings)


def anchored(
    players: Sequence[str],
    judges: Iterable[Judge],
    budget: int,
    *,
    anchor: str | None = None,
    swap: str = "both",
    seed: int = 0,
) -> tuple[list[Match], int]:
    """Per prompt every player against ``anchor`` (default: the first player): (matches, judge calls)."""
    anchor = players[0] if anchor is None and players else anchor
    if players and anchor not in players:
        raise PrefrunError(f"tournament.anchor={anchor!r} is not a player; choose one of {', '.join(players)}")

    def pairings(others: list[str], judge: Judge, rng: random.Random) -> list[Match]:
        return [_judged(judge, *_shown(anchor, p, rng), swap, rng) for p in others if p != anchor]

    return _play(players, judges, budget, swap, seed, len(players) - 1, pairings)


def round_robin(
    players: Sequence[str], judges: Iterable[Judge], budget: int, *, swap: str = "both", seed: int = 0
) -> tuple[list[Match], int]:
    """Per prompt every pair of players: (matches, judge calls)."""

    def pairings(everyone: list[str], judge: Judge, rng: random.Random) -> list[Match]:
        n = len(everyone)
        return [_judged(judge, *_shown(everyone[i], everyone[j], rng), swap, rng) for i in range(n) for j in range(i)]

    return _play(players, judges, budget, swap, seed, len(players) * (len(players) - 1) // 2, pairings)


SCHEDULES = {"bracket": bracket, "anchored": anchored, "round_robin": round_robin}


def matches_per_prompt(schedule: str, n_players: int) -> int:
    """Matches one prompt contributes: schedules emit prompts in order, so match k is on prompt k // this."""
    if schedule not in SCHEDULES:
        raise PrefrunError(f"tournament.schedule={schedule!r} must be one of {', '.join(SCHEDULES)}")
    return n_players * (n_players - 1) // 2 if schedule == "round_robin" else n_players - 1
