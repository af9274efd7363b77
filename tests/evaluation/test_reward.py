"""eval=reward: reward of policy and reference samples by the run's reward source, win rate, KL; NaN scores."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from evaluation_helpers import make_inputs, policy_reference, sort_data
from omegaconf import OmegaConf

from prefrun.data.synthetic import oracle_reward
from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.reward import reward_comparison
from prefrun.generation import SamplingSettings
from prefrun.rewards import RewardContext, build_reward
from prefrun.rewards.base import RewardSource


def test_comparison_by_hand_with_unscored_responses():
    nan = math.nan
    policy = torch.tensor([[1.0, 2.0], [0.0, nan], [3.0, 3.0]])
    reference = torch.tensor([[0.0, 2.0], [1.0, 5.0], [nan, 1.0]])
    got = reward_comparison(policy, reference, n_boot=200, seed=0)
    # comparisons with both scores: (1>0) 1, (2=2) ½, (0<1) 0, (3>1) 1
    assert got["win_rate"] == pytest.approx(2.5 / 4)
    assert got["comparisons"] == 4 and got["nan_policy"] == 1 and got["nan_reference"] == 1
    assert got["policy_reward"] == pytest.approx(9 / 5) and got["reference_reward"] == pytest.approx(9 / 5)
    assert got["win_rate_low"] <= got["win_rate"] <= got["win_rate_high"]


def test_reward_evaluator_with_the_oracle_matches_eval_oracle(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    oracle = build_reward(OmegaConf.create({"name": "oracle"}), RewardContext(oracle=oracle_reward))
    generation = SamplingSettings(temperature=1.0, max_new_tokens=10, batch_size=8)
    inputs = make_inputs(policy, reference, tokenizer, sort_data(16), reward=oracle, generation=generation)
    got = EVALUATORS.get("reward")(inputs, OmegaConf.create({"prompts": 16, "seed": 4, "bootstrap": 300})).metrics
    want = EVALUATORS.get("oracle")(
        inputs, OmegaConf.create({"prompts": 16, "max_new_tokens": 10, "batch_size": 8, "seed": 4})
    ).metrics
    assert got["win_rate"] == pytest.approx(want["win_rate"])
    assert got["policy_reward"] == pytest.approx(want["policy/oracle_reward"])
    assert got["reference_reward"] == pytest.approx(want["reference/oracle_reward"])
    assert got["kl"] == pytest.approx(want["kl"], abs=1e-5)
    assert got["source"] == "oracle" and got["samples"] == 16


class Flaky(RewardSource):
    """The oracle, except that every seventh response cannot be scored."""

    name = "flaky"

    def _score_flat(self, prompts, responses):
        return [math.nan if i % 7 == 0 else oracle_reward(p, r) for i, (p, r) in enumerate(zip(prompts, responses))]


def test_nan_scores_are_counted_reported_and_warned_about(micro_model, caplog):
    policy, reference, tokenizer = policy_reference(micro_model)
    generation = SamplingSettings(max_new_tokens=8, batch_size=8)
    inputs = make_inputs(policy, reference, tokenizer, sort_data(14), reward=Flaky(), generation=generation)
    with caplog.at_level(logging.WARNING, logger="prefrun"):
        got = EVALUATORS.get("reward")(inputs, OmegaConf.create({"prompts": 14, "samples": 2, "bootstrap": 100}))
    m = got.metrics
    assert m["nan_policy"] == 4 and m["nan_reference"] == 4  # responses 0, 7, 14, 21 of 28 each
    assert m["comparisons"] == 28 - 4  # the NaN responses sit at the same (prompt, k) for both models
    assert not math.isnan(m["win_rate"]) and not math.isnan(m["policy_reward"])
    assert "4 of 28 scores are NaN" in caplog.text
    assert any(row.label == "unscored (NaN)" and row.policy == "4" for row in got.rows)
