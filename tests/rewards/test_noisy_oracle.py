"""reward=noisy_oracle: M annotators, each flipping a comparison with probability q; a Gaussian-noisy score."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.data.synthetic import SortTask, oracle_reward, preference_records
from prefrun.errors import PrefrunError
from prefrun.rewards import RewardContext, build_reward


def noisy(**settings):
    cfg = OmegaConf.create({"name": "noisy_oracle", **settings})
    return build_reward(cfg, RewardContext(oracle=oracle_reward, seed=0))


@pytest.fixture(scope="module")
def many_lists():
    records = preference_records(SortTask(), n=200, k=4, max_swaps=6, corrupt_prob=0.1, seed=7)
    return [r["prompt"] for r in records], [r["responses"] for r in records]


def oracle_hard(prompts, lists):
    r = torch.tensor([[oracle_reward(p, y) for y in row] for p, row in zip(prompts, lists)])
    d = r.unsqueeze(-1) - r.unsqueeze(-2)
    return (d > 0).float() + 0.5 * (d == 0).float()


def test_preferences_are_annotator_vote_shares(many_lists, check_preferences):
    prompts, lists = many_lists
    p = noisy(annotators=5, flip_prob=0.2).prefer(prompts, lists)
    check_preferences(p, len(prompts), 4)
    decided = oracle_hard(prompts, lists) != 0.5  # off the diagonal and not tied
    votes = p[decided] * 5
    assert torch.allclose(votes, votes.round(), atol=1e-5)  # each rate is (votes) / M


def test_empirical_flip_rate_matches_q_within_binomial_tolerance(many_lists):
    prompts, lists = many_lists
    m, q = 5, 0.2
    source = noisy(annotators=m, flip_prob=q)
    p = source.prefer(prompts, lists)
    hard = oracle_hard(prompts, lists)
    upper = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    decided = upper & (hard != 0.5)
    # votes against the oracle on decided pairs, read off the returned rates (independent of the counters)
    against = torch.where(hard == 1, 1 - p, p)[decided] * m
    n = int(decided.sum()) * m
    rate = float(against.sum()) / n
    assert abs(rate - q) < 4 * math.sqrt(q * (1 - q) / n), (rate, n)
    assert source.stats()["flip_rate"] == pytest.approx(rate, abs=1e-6)
    assert source.stats()["comparisons"] == n
    assert torch.all(p[upper & (hard == 0.5)] == 0.5)  # ties stay ties


def test_without_flips_the_rates_are_the_oracle_preference(many_lists):
    prompts, lists = many_lists
    p = noisy(annotators=3, flip_prob=0.0).prefer(prompts, lists)
    assert torch.equal(p, oracle_hard(prompts, lists))


def test_score_is_oracle_plus_gaussian_noise(many_lists):
    prompts, lists = many_lists
    sigma = 0.1
    scores = noisy(score_noise=sigma).score(prompts, lists)
    truth = torch.tensor([[oracle_reward(p, y) for y in row] for p, row in zip(prompts, lists)])
    noise = (scores - truth).flatten()
    n = noise.numel()
    assert abs(noise.mean().item()) < 4 * sigma / math.sqrt(n)
    assert abs(noise.std().item() - sigma) < 4 * sigma / math.sqrt(2 * n)
    assert torch.equal(noisy(score_noise=0.0).score(prompts, lists), truth)


def test_seeded_draws_repeat_and_differ_across_seeds(many_lists):
    prompts, lists = many_lists
    a = noisy(seed=1).prefer(prompts[:20], lists[:20])
    b = noisy(seed=1).prefer(prompts[:20], lists[:20])
    c = noisy(seed=2).prefer(prompts[:20], lists[:20])
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("setting", [{"flip_prob": 1.5}, {"annotators": 0}, {"score_noise": -1}])
def test_bad_settings_are_one_line_errors(setting):
    with pytest.raises(PrefrunError) as e:
        noisy(**setting)
    assert "\n" not in str(e.value) and f"reward.{next(iter(setting))}" in str(e.value)
