"""A simulated pairwise judge with known position and length biases: the ground truth the judge evaluator
and the swap protocols are measured against (scripts/eval_checks.py and the tests).

It is the LLM judge source (``reward=judge``: same prefer(), same swap protocols fixed | random | both,
same counters and consistency) with its generation replaced by a formula. The response shown first wins
with probability

    P(first ≻ second) = σ(s · (q(first) − q(second)) + γ · tanh((len(first) − len(second)) / ℓ) + b)

q a quality function (the sort oracle, say), s its scale, b a first-position bias (Wang et al. 2023,
arXiv 2305.17926) and γ a length bias over ℓ characters (Dubois et al. 2024, arXiv 2404.04475). With
``verdicts="draw"`` each verdict is a seeded coin with that probability (a judge that answers "first" or
"second"); with ``verdicts="probability"`` it is the probability itself (AlpacaEval's weighted judge).

The true preference, what an unbiased, length-neutral judge reports on average, is σ(s · (q(y_π) − q(y_ref))).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from prefrun.rewards.base import RewardContext
from prefrun.rewards.judge import JudgeReward


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class SimulatedJudge(JudgeReward):
    name = "simulated_judge"

    def __init__(
        self,
        quality: Callable[[Any, str], float],
        *,
        scale: float = 1.0,
        position_bias: float = 0.0,
        length_bias: float = 0.0,
        length_scale: float = 10.0,
        swap: str = "both",
        verdicts: str = "draw",
        seed: int = 0,
    ) -> None:
        if verdicts not in ("draw", "probability"):
            raise ValueError(f"verdicts={verdicts!r}: draw or probability")
        super().__init__({"protocol": "pairwise", "swap": swap, "seed": seed}, RewardContext(seed=seed))
        self.quality, self.scale = quality, scale
        self.position_bias, self.length_bias, self.length_scale = position_bias, length_bias, length_scale
        self.verdicts = verdicts
        self.draws = random.Random(seed + 1)  # the verdict coins, apart from the order coins of swap=random

    def _resolve(self, cfg: Any, context: RewardContext) -> None:
        return None  # no judge model: verdicts come from the formula

    def first_probability(self, prompt: Any, first: str, second: str) -> float:
        z = self.scale * (self.quality(prompt, first) - self.quality(prompt, second)) + self.position_bias
        z += self.length_bias * math.tanh((len(first) - len(second)) / self.length_scale)
        return _sigmoid(z)

    def _first_wins(self, items: list[tuple[Any, str, str]]) -> list[float]:
        probs = [self.first_probability(p, a, b) for p, a, b in items]
        if self.verdicts == "probability":
            wins = probs
        else:
            wins = [1.0 if self.draws.random() < p else 0.0 for p in probs]
        self.counters["pairwise_judgments"] += len(wins)
        self.counters["first_wins"] += sum(w == 1.0 for w in wins)
        self.counters["second_wins"] += sum(w == 0.0 for w in wins)
        return wins

    def true_preferences(self, prompts: Sequence[Any], policy: Sequence[str], reference: Sequence[str]) -> torch.Tensor:
        """[B] σ(s · (q(y_π) − q(y_ref))): the unbiased, length-neutral judge's expected verdict."""
        gaps = [self.quality(x, a) - self.quality(x, b) for x, a, b in zip(prompts, policy, reference)]
        return torch.tensor([_sigmoid(self.scale * gap) for gap in gaps], dtype=torch.float64)
