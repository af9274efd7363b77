"""The protocol's shared parts: the two score → preference links, ragged lists, and choosing a source by name."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.config import CONF_DIR
from prefrun.errors import PrefrunError
from prefrun.rewards import REWARDS, build_reward
from prefrun.rewards.base import RewardSource, bradley_terry, hard_preference


def test_links_follow_their_formulas_entry_by_entry(check_preferences):
    scores = torch.tensor([[0.3, -1.2, 0.3, 2.0]])
    hard, bt = hard_preference(scores), bradley_terry(scores)
    check_preferences(hard, 1, 4)
    check_preferences(bt, 1, 4)
    for i in range(4):
        for j in range(4):
            si, sj = scores[0, i].item(), scores[0, j].item()
            assert hard[0, i, j].item() == (1.0 if si > sj else 0.0 if si < sj else 0.5)
            assert bt[0, i, j].item() == pytest.approx(1 / (1 + math.exp(-(si - sj))), abs=1e-6)


def test_a_nan_score_makes_its_pairs_nan_and_keeps_the_diagonal_half():
    p = bradley_terry(torch.tensor([[1.0, float("nan"), 0.0]]))
    assert p[0, 0, 1].isnan() and p[0, 1, 0].isnan() and p[0, 1, 2].isnan()
    assert p[0, 1, 1] == 0.5 and p[0, 0, 2] == pytest.approx(1 / (1 + math.exp(-1)))


class Lengths(RewardSource):
    name = "lengths"

    def __init__(self):
        super().__init__()

    def _score_flat(self, prompts, responses):
        return [float(len(r)) if r else None for r in responses]


def test_ragged_lists_are_padded_with_nan_and_padding_is_not_counted():
    source = Lengths()
    scores = source.score(["a", "b"], [["xx", "", "xxxx"], ["x"]])
    assert scores.shape == (2, 3)
    assert scores[0, 0] == 2 and scores[0, 1].isnan() and scores[0, 2] == 4 and scores[1, 0] == 1
    assert scores[1, 1:].isnan().all()
    assert source.stats()["nan"] == 1.0  # the empty response; the two padded slots are not NaNs it returned
    assert source.stats()["responses"] == 4.0


def test_an_unknown_source_lists_the_available_ones():
    with pytest.raises(PrefrunError) as e:
        build_reward(OmegaConf.create({"name": "gpt9"}))
    message = str(e.value)
    assert "\n" not in message and "'gpt9'" in message and "reward=<name>" in message
    for name in ("oracle", "noisy_oracle", "reward_model", "judge", "python"):
        assert name in message


def test_a_missing_name_says_how_to_choose_one():
    with pytest.raises(PrefrunError, match="reward=<"):
        build_reward(OmegaConf.create({}))


def test_every_reward_yaml_names_a_registered_source():
    from pathlib import Path

    files = sorted(Path(CONF_DIR, "reward").glob("*.yaml"))
    assert [f.stem for f in files] == REWARDS.names()
    for f in files:
        assert OmegaConf.load(f).name == f.stem


@pytest.mark.parametrize("name", ["oracle", "noisy_oracle", "reward_model", "judge", "python"])
def test_each_source_composes_from_the_cli_group(name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"reward={name}"])
    assert cfg.reward.name == name
    if name == "oracle":
        from prefrun.data.synthetic import oracle_reward
        from prefrun.rewards import RewardContext

        assert build_reward(cfg.reward, RewardContext(oracle=oracle_reward)).name == "oracle"
