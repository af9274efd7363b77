"""``reward=noisy_oracle``: M simulated annotators who each misjudge a comparison with probability q.

For every pair (i, j) of a list, annotator m reports the oracle's hard preference h_ij ∈ {0, ½, 1}
flipped with probability q (a tie stays a tie: flipping "no preference" changes nothing):

    v_ijm = h_ij with probability 1 − q,  1 − h_ij with probability q        (independent over m and pairs)
    prefer: P̂_ij = (1/M) Σ_m v_ijm,  P̂_ji = 1 − P̂_ij,  diag ½             E[P̂_ij] = (1 − q) h_ij + q (1 − h_ij)

the empirical preference rates that SPPO (Wu et al. 2024, arXiv 2405.00675, P̂(y ≻ y′) estimated from
annotator votes) and iREPO (Le et al. 2024, arXiv 2405.15230, the empirical human preference p̂ of each
pair) consume. With q = 0 the rates equal the oracle's hard preference.

    score:  s = r + σ ε,  ε ~ N(0, 1)                                         σ = reward.score_noise

A Gaussian-noisy reading of the oracle (Thurstone's case V) rather than each response's share of
annotator wins: a score must be comparable across prompts and defined for K = 1 (the reward evaluator
scores single policy and reference samples), and a list-relative win share is neither; SPPO's win share
P̂(y ≻ π) is the row mean of ``prefer``'s matrix when a caller wants it. Two responses with reward gap Δ
are misordered by their noisy scores with probability Φ(−Δ / (σ√2)).

Draws come from a generator seeded once (``reward.seed``, else the run seed): the same calls in the same
order give the same votes and noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from prefrun.errors import PrefrunError
from prefrun.rewards import REWARDS
from prefrun.rewards.base import (
    RewardContext,
    RewardSource,
    check_inputs,
    flatten,
    hard_preference,
    real_mask,
    unflatten,
)
from prefrun.rewards.oracle import require_oracle


@REWARDS.register("noisy_oracle")
class NoisyOracleReward(RewardSource):
    name = "noisy_oracle"

    def __init__(self, cfg: Any, context: RewardContext) -> None:
        super().__init__()
        self.oracle = require_oracle(context, "noisy_oracle")
        self.annotators = int(cfg.get("annotators", 5))
        self.flip_prob = float(cfg.get("flip_prob", 0.2))
        self.score_noise = float(cfg.get("score_noise", 0.1))
        if self.annotators < 1:
            raise PrefrunError(f"reward.annotators={self.annotators} must be at least 1")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise PrefrunError(f"reward.flip_prob={self.flip_prob} must be a probability in [0, 1]")
        if self.score_noise < 0:
            raise PrefrunError(f"reward.score_noise={self.score_noise} must be ≥ 0 (the noise's standard deviation)")
        seed = cfg.get("seed")
        self.generator = torch.Generator().manual_seed(int(context.seed if seed is None else seed))
        self.counters.update(comparisons=0, flips=0)

    def _oracle_flat(self, prompts: list[Any], responses: list[str]) -> list[float]:
        return [math.nan if (v := self.oracle(p, r)) is None else float(v) for p, r in zip(prompts, responses)]

    def _score_flat(self, prompts: list[Any], responses: list[str]) -> list[float]:
        rewards = torch.tensor(self._oracle_flat(prompts, responses), dtype=torch.float32)
        noise = torch.randn(rewards.shape, generator=self.generator)
        return (rewards + self.score_noise * noise).tolist()

    def prefer(self, prompts: Sequence[Any], lists: Sequence[Sequence[str]]) -> torch.Tensor:
        check_inputs(prompts, lists)
        self.counters["prefer_calls"] += 1
        flat = self._oracle_flat(*flatten(prompts, lists))
        rewards = unflatten(flat, lists)
        hard = hard_preference(rewards)  # [B, K, K]
        b, k = rewards.shape
        flips = torch.rand((b, k, k, self.annotators), generator=self.generator) < self.flip_prob
        votes = torch.where(flips, 1.0 - hard.unsqueeze(-1), hard.unsqueeze(-1))
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
        rate = votes.mean(-1)
        p = torch.where(upper, rate, 1.0 - rate.transpose(-1, -2))
        p[..., torch.arange(k), torch.arange(k)] = 0.5
        real = real_mask(lists)
        counted = upper & real.unsqueeze(-1) & real.unsqueeze(-2) & (hard != 0.5) & ~hard.isnan()  # decided pairs
        self.counters["comparisons"] += int(counted.sum()) * self.annotators
        self.counters["flips"] += int((flips & counted.unsqueeze(-1)).sum())
        self.counters["responses"] += len(flat)
        self.counters["nan"] += int((rewards.isnan() & real).sum())
        return p

    def stats(self) -> dict[str, float]:
        out = super().stats()
        out["flip_rate"] = out["flips"] / out["comparisons"] if out["comparisons"] else 0.0
        return out
