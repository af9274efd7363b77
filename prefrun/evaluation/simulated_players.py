"""Simulated tournament players of known strength: the ground truth the tournament schedules and the
Bradley–Terry fit are measured against (scripts/tournament_study.py and the tests). A test double for a
judge reward source over players' answers, with no model behind it.

Player i has a true Elo rating R_i (prefrun.evaluation.tournament's scale: r_i = R_i · ln 10 / 400 in
natural log-odds). On each prompt its answer is as good as r_i + ε_i, ε_i ~ N(0, noise²) drawn afresh per
prompt and player (some prompts suit some players), and the judge, shown ``first`` then ``second``, answers
"first" with probability

    P(first ≻ second) = σ(r_first + ε_first − r_second − ε_second + b)

b a first-position bias (Wang et al. 2023, arXiv 2305.17926). Verdicts are seeded coins: 1.0 or 0.0. With
noise = 0 and b = 0 this is the Bradley–Terry model itself, so the fit's true ratings are the R_i.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from prefrun.evaluation.tournament import ELO_SCALE, Judge


class SimulatedPlayers:
    """Per-prompt judges over players of known Elo ``ratings`` (module docstring)."""

    def __init__(
        self, ratings: Mapping[str, float], *, noise: float = 0.0, position_bias: float = 0.0, seed: int = 0
    ) -> None:
        self.ratings = dict(ratings)
        self.noise, self.position_bias = noise, position_bias
        self.rng = np.random.default_rng(seed)
        self.calls = 0  # judge calls so far, over all prompts

    def probability(self, first: str, second: str, quality: Mapping[str, float] | None = None) -> float:
        """P(first ≻ second) on a prompt whose per-player qualities (natural units) are ``quality``."""
        q = quality or {p: r / ELO_SCALE for p, r in self.ratings.items()}
        return 1.0 / (1.0 + math.exp(-(q[first] - q[second] + self.position_bias)))

    def prompt(self) -> Judge:
        """A judge for one new prompt: fresh per-player noise, then seeded verdict coins."""
        eps = self.rng.normal(0.0, self.noise, len(self.ratings)) if self.noise else np.zeros(len(self.ratings))
        quality = {p: r / ELO_SCALE + float(e) for (p, r), e in zip(self.ratings.items(), eps)}

        def judge(first: str, second: str) -> float:
            self.calls += 1
            return 1.0 if self.rng.random() < self.probability(first, second, quality) else 0.0

        return judge

    def judges(self) -> Iterator[Judge]:
        """An endless stream of per-prompt judges, as a schedule consumes them."""
        while True:
            yield self.prompt()
