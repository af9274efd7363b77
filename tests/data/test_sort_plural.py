"""dataset=sort_plural: groups with opposite oracles, users with their own comparisons, held-out new users."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prefrun.data import synthetic
from prefrun.data.sort_plural import group_reward, target_order
from prefrun.data.sources import build_data
from prefrun.errors import PrefrunError

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset" / "sort_plural.yaml"


def config(**overrides):
    cfg = OmegaConf.load(CONF)
    cfg.update(
        {"users": 5, "new_users": 2, "pairs_per_user": 6, "eval_pairs_per_user": 3, "sft_records": 8, **overrides}
    )
    return cfg


def test_two_groups_want_ascending_and_descending_and_disagree_on_every_valid_answer():
    prompt = synthetic.format_prompt([12, 5, 7])
    assert target_order([12, 5, 7], 0, 2, 30) == [5, 7, 12] and target_order([12, 5, 7], 1, 2, 30) == [12, 7, 5]
    for answer in ([5, 7, 12], [7, 5, 12], [12, 7, 5], [5, 12, 7]):
        response = synthetic.format_response(answer)
        assert group_reward(0, 2, 30, prompt, response) == synthetic.oracle_reward(prompt, response)
        assert group_reward(1, 2, 30, prompt, response) == pytest.approx(1 - group_reward(0, 2, 30, prompt, response))
    assert group_reward(1, 2, 30, prompt, " 5 7") == 0.0  # malformed: the worst for every group


def test_users_have_their_own_comparisons_labelled_by_their_groups_oracle():
    data = build_data(config(), seed=0)
    assert data.groups == {"u00": 0, "u01": 0, "u02": 0, "u03": 1, "u04": 1, "n00": 0, "n01": 1}  # shares 0.6 / 0.4
    assert {r["user"] for r in data.train} == {"u00", "u01", "u02", "u03", "u04"}  # new users never train
    assert {r["user"] for r in data.adapt_records} == {"n00", "n01"} and len(data.adapt_records) == 12
    assert len(data.eval_records) == 7 * 3 and data.reward_fn is None
    for r in data.train + data.adapt_records + data.eval_records:
        assert r["group"] == data.groups[r["user"]] and r["scores"][0] != r["scores"][1]
        assert r["scores"] == [data.user_reward(r["user"], r["prompt"], y) for y in r["responses"]]
    train_prompts = {r["prompt"] for r in data.train}
    assert not train_prompts & {r["prompt"] for r in data.eval_records}  # disjoint seed streams (almost surely)
    assert build_data(config(), seed=1).train == data.train  # the data does not depend on the run seed


def test_bad_group_shares_are_one_line_errors():
    with pytest.raises(PrefrunError, match=r"^dataset.group_shares=\[0.5\] must hold dataset.groups=2 positive"):
        build_data(config(group_shares=[0.5]), seed=0)
