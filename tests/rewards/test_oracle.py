"""reward=oracle: the sort task's reward exactly, and a hard preference (1 / 0 / ½ on ties)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from prefrun.data.synthetic import oracle_reward
from prefrun.errors import PrefrunError
from prefrun.rewards import RewardContext, build_reward


def oracle_source():
    return build_reward(OmegaConf.create({"name": "oracle"}), RewardContext(oracle=oracle_reward))


def test_scores_equal_the_sort_oracle(sort_lists):
    prompts, lists = sort_lists
    scores = oracle_source().score(prompts, lists)
    assert scores.shape == (len(prompts), 4)
    for b, (prompt, row) in enumerate(zip(prompts, lists)):
        for k, response in enumerate(row):
            assert scores[b, k].item() == pytest.approx(oracle_reward(prompt, response), abs=1e-7)


def test_prefer_is_the_hard_oracle_preference(sort_lists, check_preferences):
    prompts, lists = sort_lists
    prompts, lists = [*prompts, "sort: 3 1 2 ->"], [*lists, [" 1 2 3", " 1 2 3", " 3 2 1", " 2 1 3"]]  # a tie
    p = oracle_source().prefer(prompts, lists)
    check_preferences(p, len(prompts), 4)
    for b, (prompt, row) in enumerate(zip(prompts, lists)):
        for i in range(4):
            for j in range(4):
                ri, rj = oracle_reward(prompt, row[i]), oracle_reward(prompt, row[j])
                assert p[b, i, j].item() == (1.0 if ri > rj else 0.0 if ri < rj else 0.5)
    assert p[-1, 0, 1] == 0.5 and p[-1, 0, 2] == 1.0


def test_a_dataset_without_an_oracle_is_refused_in_one_line():
    with pytest.raises(PrefrunError) as e:
        build_reward(OmegaConf.create({"name": "oracle"}), RewardContext(oracle=None))
    assert "\n" not in str(e.value) and "reward=oracle" in str(e.value) and "reward=reward_model" in str(e.value)


def test_stats_count_calls_and_responses(sort_lists):
    prompts, lists = sort_lists
    source = oracle_source()
    source.score(prompts, lists)
    source.prefer(prompts[:2], lists[:2])
    stats = source.stats()
    assert stats["score_calls"] == 1 and stats["prefer_calls"] == 1
    assert stats["responses"] == 4 * (len(prompts) + 2) and stats["nan"] == 0
