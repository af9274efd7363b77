"""eval=judge: the oracle as judge reproduces eval=oracle's win rate; swap protocols against a judge of known
first-position bias; the length-controlled win rate against a judge that favours long answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from evaluation_helpers import make_inputs, policy_reference, sort_data
from omegaconf import OmegaConf

from prefrun.data.synthetic import oracle_reward
from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.judge import judged_win_rate
from prefrun.evaluation.simulated import SimulatedJudge
from prefrun.generation import SamplingSettings
from prefrun.rewards import RewardContext, build_reward
from prefrun.rewards.base import RewardSource


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def quality(prompt, response: str) -> float:
    """The simulated answers carry their quality as text ("+0.4132", maybe padded with spaces)."""
    return float(response)


def test_oracle_as_judge_gives_the_oracle_evaluators_win_rate(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    data = sort_data(24)
    oracle = build_reward(OmegaConf.create({"name": "oracle"}), RewardContext(oracle=oracle_reward))
    # the judge samples with the generation block: make it the oracle evaluator's settings
    generation = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=10, batch_size=8, seed=3)
    inputs = make_inputs(policy, reference, tokenizer, data, reward=oracle, generation=generation)
    judged = EVALUATORS.get("judge")(inputs, OmegaConf.create({"prompts": 24, "seed": 3, "bootstrap": 500})).metrics
    exact = EVALUATORS.get("oracle")(
        inputs, OmegaConf.create({"prompts": 24, "max_new_tokens": 10, "batch_size": 8, "seed": 3})
    ).metrics
    assert judged["win_rate"] == pytest.approx(exact["win_rate"])
    assert judged["win_rate_low"] <= exact["win_rate"] <= judged["win_rate_high"]
    assert judged["pairs"] == 24 and judged["nan"] == 0


def test_swap_protocols_against_a_first_position_bias():
    # Δ ~ N(0.5, 1): the true win rate E σ(Δ) ≈ 0.60; the judge adds b = 1 for the answer shown first.
    rng = np.random.default_rng(0)
    delta = rng.normal(0.5, 1.0, 600)
    policy, reference, prompts = [f"{d:+.6f}" for d in delta], ["+0"] * 600, list(range(600))
    true = float(np.mean(sigmoid(delta)))
    got = {}
    for swap in ("fixed", "random", "both"):
        judge = SimulatedJudge(quality, position_bias=1.0, swap=swap, seed=1)
        got[swap] = judged_win_rate(judge, prompts, policy, reference, n_boot=1000, seed=0)
    assert got["fixed"]["win_rate"] > true + 0.12  # off by the bias: ≈ E σ(Δ + 1) ≈ 0.78
    assert got["fixed"]["win_rate"] == pytest.approx(np.mean(sigmoid(delta + 1)), abs=0.04)
    for swap in ("random", "both"):
        assert got[swap]["win_rate"] == pytest.approx(true, abs=0.04), swap
        assert got[swap]["win_rate_low"] <= true <= got[swap]["win_rate_high"], swap
    # both orders agree when the verdicts, mapped back, coincide: P = p₁(1 − p₂) + (1 − p₁)p₂
    p1, p2 = sigmoid(delta + 1), sigmoid(-delta + 1)
    assert got["both"]["consistency"] == pytest.approx(np.mean(p1 * (1 - p2) + (1 - p1) * p2), abs=0.04)
    assert "consistency" not in got["fixed"]


def test_length_controlled_win_rate_sees_through_padding():
    # The judge adds γ·tanh(Δchars / 10) for the longer answer; the policy pads its answers with 0–30 spaces,
    # which leaves their quality unchanged.
    rng = np.random.default_rng(0)
    n = 3000
    delta = rng.normal(0.4, 1.0, n)
    policy, reference = [f"{d:+.4f}" for d in delta], ["+0.0000"] * n
    padded = [text + " " * int(k) for text, k in zip(policy, rng.integers(0, 31, n))]
    judge = SimulatedJudge(quality, length_bias=1.5, length_scale=10, swap="both", verdicts="probability")
    true = float(judge.true_preferences(range(n), policy, reference).mean())
    plain = judged_win_rate(judge, list(range(n)), policy, reference, n_boot=200, seed=0)
    verbose = judged_win_rate(judge, list(range(n)), padded, reference, n_boot=200, seed=0)
    assert plain["win_rate"] == pytest.approx(true, abs=1e-9)  # equal lengths: no length effect
    assert verbose["win_rate"] > true + 0.1  # padding pleases the judge
    assert verbose["lc_win_rate"] == pytest.approx(true, abs=0.02)  # ... but not the LC win rate


class HalfBlind(RewardSource):
    """Prefers like the oracle but cannot judge (NaN) every tenth pair."""

    name = "half_blind"

    def prefer(self, prompts, lists):
        out = torch.tensor([[[0.5, float(a > b)], [float(b > a), 0.5]] for a, b in lists])
        out[::10] = math.nan
        return out


def test_unjudged_pairs_are_counted_and_left_out(caplog):
    prompts = list(range(50))
    policy, reference = ["2"] * 25 + ["0"] * 25, ["1"] * 50
    got = judged_win_rate(HalfBlind(), prompts, policy, reference, n_boot=100, seed=0)
    assert got["nan"] == 5 and got["pairs"] == 45
    assert got["win_rate"] == pytest.approx(22 / 45)  # pairs 0, 10, 20 (wins) and 30, 40 (losses) are unjudged
    assert "5 of 50 scores are NaN" in caplog.text
