"""Reward-model objectives (trains="reward_model") against loops written from their formulas."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.objectives import available_objectives, get_objective, get_spec
from prefrun.objectives.config import build_objective

TOL = dict(rel=1e-6, abs=1e-6)


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def test_reward_model_objectives_are_registered_apart_from_policy_ones():
    assert available_objectives("reward_model") == ["bt", "pal_a", "pal_b", "pl_rm"]
    assert "bt" not in available_objectives() and "dpo" in available_objectives()
    assert get_spec("bt").trains == "reward_model" and get_spec("dpo").trains == "policy"
    assert get_spec("bt").data == "pairwise" and get_spec("pl_rm").data == "list"
    assert not get_spec("bt").needs_reference and get_spec("pl_rm").min_k == 2


def test_each_kind_is_called_its_own_way():
    r = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="trains a reward model"):
        get_objective("bt")(r, None, r)
    with pytest.raises(ValueError, match="trains a policy"):
        get_objective("dpo").reward_loss(r, r)


@pytest.mark.parametrize(
    ("name", "trains", "message"),
    [
        (
            "bt",
            "policy",
            "objective=bt trains a reward model, not a policy; run it with task=reward_model objective=bt",
        ),
        (
            "dpo",
            "reward_model",
            "objective=dpo trains a policy; task=reward_model needs a reward-model objective: "
            "objective=<bt|pal_a|pal_b|pl_rm>",
        ),
    ],
)
def test_an_objective_of_the_other_kind_is_one_line(name, trains, message):
    with pytest.raises(PrefrunError) as e:
        build_objective(OmegaConf.create({"name": name}), trains=trains)
    assert str(e.value) == message


def _pairs(b: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(b, 2, generator=g, dtype=torch.float64)
    scores = torch.rand(b, 2, generator=g, dtype=torch.float64)
    scores[0] = torch.tensor([0.2, 0.9], dtype=torch.float64)  # the chosen one second in its list
    return rewards, scores


@pytest.mark.parametrize(("margin_scale", "center"), [(0.0, 0.0), (1.5, 0.0), (0.0, 0.01), (2.0, 0.1)])
def test_bt_is_the_logistic_loss_of_the_margin(margin_scale, center):
    rewards, scores = _pairs()
    out = get_objective("bt", margin_scale=margin_scale, center_rewards_coefficient=center).reward_loss(rewards, scores)
    terms, centering = [], []
    for (r0, r1), (s0, s1) in zip(rewards.tolist(), scores.tolist()):
        (rw, sw), (rl, sl) = ((r0, s0), (r1, s1)) if s0 >= s1 else ((r1, s1), (r0, s0))
        terms.append(-logsigmoid(rw - rl - margin_scale * (sw - sl)))
        centering.append((rw + rl) ** 2)
    want = sum(terms) / len(terms) + center * sum(centering) / len(centering)
    assert out.loss.item() == pytest.approx(want, **TOL)
    assert out.metrics["rewards/accuracies"] == pytest.approx(
        sum((r[0] > r[1]) == (s[0] >= s[1]) for r, s in zip(rewards.tolist(), scores.tolist())) / len(terms)
    )


def _plackett_luce(rewards: list[float], scores: list[float]) -> float:
    """−log P(ranking by scores descending, ties in list order) under r, from the definition."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable
    total = 0.0
    for k in range(len(order) - 1):
        rest = [rewards[j] for j in order[k:]]
        total -= rewards[order[k]] - math.log(sum(math.exp(v) for v in rest))
    return total


def test_pl_rm_is_the_plackett_luce_likelihood_with_ties_and_padding():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(4, 5, generator=g, dtype=torch.float64)
    scores = torch.tensor(
        [[0.1, 0.9, 0.5, 0.3, 0.7], [1.0, 0.0, 1.0, 0.5, 0.2], [0.3, 0.2, 0.1, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    padded = rewards.masked_fill(~mask, float("nan"))  # padding may hold anything
    for center in (0.0, 0.05):
        out = get_objective("pl_rm", center_rewards_coefficient=center).reward_loss(padded, scores, mask=mask)
        lists = [(padded[b][mask[b]].tolist(), scores[b][mask[b]].tolist()) for b in range(4)]
        ranked = [(r, s) for r, s in lists if len(r) >= 2]  # the last list has one entry: nothing to rank
        want = sum(_plackett_luce(r, s) for r, s in ranked) / len(ranked)
        want += center * sum((2 * sum(r) / len(r)) ** 2 for r, _ in ranked) / len(ranked)
        assert out.loss.item() == pytest.approx(want, **TOL)
    padded.requires_grad_(True)
    get_objective("pl_rm").reward_loss(padded, scores, mask=mask).loss.backward()
    assert torch.all(padded.grad[~mask] == 0) and torch.isfinite(padded.grad).all()


@pytest.mark.parametrize("center", [0.0, 0.01])
def test_pl_rm_with_two_responses_is_bt(center):
    rewards, scores = _pairs(8, seed=3)
    pl = get_objective("pl_rm", center_rewards_coefficient=center).reward_loss(rewards, scores).loss
    bt = get_objective("bt", center_rewards_coefficient=center).reward_loss(rewards, scores).loss
    assert pl.item() == pytest.approx(bt.item(), **TOL)


def test_negative_settings_are_one_line_errors():
    with pytest.raises(PrefrunError, match=r"^objective.center_rewards_coefficient=-0.1 is out of range for bt"):
        get_objective("bt", center_rewards_coefficient=-0.1)
    with pytest.raises(PrefrunError, match=r"^objective.margin_scale=-1.0 is out of range for bt"):
        get_objective("bt", margin_scale=-1.0)
