"""reward=judge: Auto-J protocols, position swap against a judge of known first-position bias, unparsed
verdicts as ties, and a real run with the micro model as the judge."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.data.synthetic import oracle_reward
from prefrun.errors import PrefrunError
from prefrun.rewards import RewardContext, build_reward
from prefrun.rewards.autoj import parse_pairwise
from prefrun.rewards.judge import JudgeReward

PAIR = re.compile(r"\[Query\]: (.*?)\n\*\*\*\n\[Response 1\]: (.*?)\n\*\*\*\n\[Response 2\]: (.*?)\n\*\*\*", re.S)
SINGLE = re.compile(r"\[Query\]: (.*?)\n\*\*\*\n\[Response\]: (.*?)\n\*\*\*", re.S)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class SimulatedJudge(JudgeReward):
    """Reads the Auto-J prompt back, and answers like a judge whose response shown first wins with probability
    σ(gap·(r₁ − r₂) + bias) (r the oracle reward); rates a single response 10·r. Loads no model."""

    def __init__(self, bias: float = 0.0, gap: float = 0.0, garbage: float = 0.0, seed: int = 0, **settings):
        self.bias, self.gap, self.garbage, self.draw = bias, gap, garbage, random.Random(seed)
        self.prompts_seen: list[str] = []
        super().__init__(OmegaConf.create({"name": "judge", **settings}), RewardContext())

    def _resolve(self, cfg, context):
        return None

    def _generate(self, judge_prompts):
        self.prompts_seen += judge_prompts
        out = []
        for text in judge_prompts:
            if self.draw.random() < self.garbage:
                out.append("I cannot decide.")
            elif m := PAIR.search(text):
                q, first, second = m.groups()
                delta = oracle_reward(q, first) - oracle_reward(q, second)
                if self.gap == math.inf:  # a noiseless judge: the better one wins, equal ones tie
                    verdict = "Response 1" if delta > 0 else "Response 2" if delta < 0 else "Tie"
                else:
                    win = self.draw.random() < sigmoid(self.gap * delta + self.bias)
                    verdict = "Response 1" if win else "Response 2"
                out.append(f"Both responses sort the list.\n\nSo, the final decision is {verdict}.")
            else:
                q, response = SINGLE.search(text).groups()
                out.append(f"Fine.\nRating: [[{10 * oracle_reward(q, response):g}]]")
        return out


def equal_pairs(n: int):
    """n prompts, each with two answers of equal quality (true preference ½)."""
    prompts = [f"sort: {i % 7} {i % 7 + 1} ->" for i in range(n)]
    return prompts, [[f" {i % 7} {i % 7 + 1}"] * 2 for i in range(n)]


def test_fixed_order_inherits_the_bias_and_swapping_removes_it(check_preferences):
    n, bias = 600, 1.0
    prompts, lists = equal_pairs(n)
    sd = math.sqrt(0.25 / n)
    fixed = SimulatedJudge(bias=bias, swap="fixed")
    p = fixed.prefer(prompts, lists)
    check_preferences(p, n, 2)
    assert abs(p[:, 0, 1].mean().item() - sigmoid(bias)) < 4 * sd  # ≈ 0.731 for a true 0.5
    assert fixed.stats()["first_position_rate"] == pytest.approx(p[:, 0, 1].mean().item(), abs=1e-6)
    for swap in ("random", "both"):
        judge = SimulatedJudge(bias=bias, swap=swap, seed=1)
        p = judge.prefer(prompts, lists)
        check_preferences(p, n, 2)
        assert abs(p[:, 0, 1].mean().item() - 0.5) < 4 * sd, swap
        assert judge.stats()["pairwise_judgments"] == (2 * n if swap == "both" else n)


def test_both_orders_report_the_consistency_of_a_biased_judge():
    n, bias = 800, 1.0
    prompts, lists = equal_pairs(n)
    judge = SimulatedJudge(bias=bias, swap="both", seed=2)
    judge.prefer(prompts, lists)
    # the two orders agree when the first-shown wins once and loses once: 2 σ(b) (1 − σ(b)) ≈ 0.393
    expected = 2 * sigmoid(bias) * (1 - sigmoid(bias))
    consistency = judge.stats()["consistency"]
    assert abs(consistency - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    assert "consistency" not in SimulatedJudge(swap="fixed").stats()


def test_with_a_real_gap_both_orders_average_to_the_theory():
    n, bias, gap = 600, 1.0, 8.0
    prompts = [f"sort: {i % 9} {i % 9 + 1} {i % 9 + 2} ->" for i in range(n)]
    a, b = lambda i: f" {i % 9} {i % 9 + 1} {i % 9 + 2}", lambda i: f" {i % 9 + 1} {i % 9} {i % 9 + 2}"
    lists = [[a(i), b(i)] for i in range(n)]  # reward gap 1/3
    delta = gap / 3
    p = SimulatedJudge(bias=bias, gap=gap, swap="both", seed=3).prefer(prompts, lists)[:, 0, 1]
    expected = 0.5 * (sigmoid(delta + bias) + sigmoid(delta - bias))
    assert abs(p.mean().item() - expected) < 4 * math.sqrt(0.25 / n)


@pytest.mark.parametrize("swap", ["fixed", "random", "both"])
def test_every_pair_of_a_list_is_judged_and_mapped_back(sort_lists, check_preferences, swap):
    prompts, lists = sort_lists
    judge = SimulatedJudge(gap=math.inf, swap=swap, seed=4)
    p = judge.prefer(prompts, lists)
    check_preferences(p, len(prompts), 4)
    for b, (prompt, row) in enumerate(zip(prompts, lists)):
        r = [oracle_reward(prompt, y) for y in row]
        for i in range(4):
            for j in range(4):
                assert p[b, i, j].item() == (1.0 if r[i] > r[j] else 0.0 if r[i] < r[j] else 0.5)
    per_order = len(prompts) * 6  # K(K−1)/2 pairs per prompt
    assert judge.stats()["pairwise_judgments"] == (2 * per_order if swap == "both" else per_order)
    if swap == "both":
        assert judge.stats()["consistency"] == 1.0


def test_single_responses_need_no_judgment():
    judge = SimulatedJudge(swap="both")
    assert judge.prefer(["sort: 1 ->"], [[" 1"]]).tolist() == [[[0.5]]]
    assert judge.prompts_seen == [] and judge.stats()["judgments"] == 0


def test_unparsed_verdicts_count_as_ties_and_are_reported(check_preferences):
    prompts, lists = equal_pairs(400)
    judge = SimulatedJudge(gap=math.inf, swap="fixed", garbage=0.3, seed=5)
    lists = [[" 9 9", row[0]] for row in lists]  # a malformed answer against a correct one
    p = judge.prefer(prompts, lists)
    check_preferences(p, 400, 2)
    unparsed = p[:, 0, 1] == 0.5  # the noiseless judge never ties here, so each ½ is an unparsed verdict
    stats = judge.stats()
    assert stats["pairwise_unparsed"] == int(unparsed.sum()) and torch.all(p[~unparsed, 0, 1] == 0.0)
    assert abs(stats["unparsed_rate"] - 0.3) < 4 * math.sqrt(0.21 / 400)


def test_score_is_the_single_rating_nan_when_unparsed(sort_lists):
    prompts, lists = sort_lists
    judge = SimulatedJudge(garbage=0.25, seed=6)
    scores = judge.score(prompts, lists)
    parsed = ~scores.isnan()
    truth = torch.tensor([[10 * oracle_reward(p, y) for y in row] for p, row in zip(prompts, lists)])
    assert torch.allclose(scores[parsed], truth[parsed], atol=1e-4)
    stats = judge.stats()
    assert stats["nan"] == stats["single_unparsed"] == int((~parsed).sum()) > 0


def test_single_protocol_prefers_by_rating(sort_lists, check_preferences):
    prompts, lists = sort_lists
    p = SimulatedJudge(protocol="single").prefer(prompts, lists)
    check_preferences(p, len(prompts), 4)
    r = [[oracle_reward(q, y) for y in row] for q, row in zip(prompts, lists)]
    assert all(p[b, i, j] == (1.0 if r[b][i] > r[b][j] else 0.0 if r[b][i] < r[b][j] else 0.5)
               for b in range(len(prompts)) for i in range(4) for j in range(4))  # fmt: skip


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(PrefrunError) as e:
        build_reward(OmegaConf.create({"name": "judge", "model": "gpt9"}), RewardContext())
    message = str(e.value)
    assert "\n" not in message and "reward.model='gpt9'" in message and "tiny" in message and "mistral7b" in message


@pytest.mark.parametrize("setting", [{"swap": "sometimes"}, {"protocol": "listwise"}, {"template": "alpaca"}])
def test_bad_settings_are_one_line_errors(setting):
    with pytest.raises(PrefrunError, match=f"reward.{next(iter(setting))}"):
        SimulatedJudge(**setting)


def test_the_tiny_preset_builds_over_the_run_words(tmp_path):
    judge = build_reward(
        OmegaConf.create({"name": "judge", "model": "tiny"}),
        RewardContext(cache_dir=str(tmp_path), words=["sort:", "->", "1"]),
    )
    assert judge.ref.path.startswith(str(tmp_path / "models")) and judge._model is None  # weights load on first use


class RecordingJudge(JudgeReward):
    """The real judge, keeping what the model wrote."""

    outputs: list[str]

    def _generate(self, judge_prompts):
        out = super()._generate(judge_prompts)
        self.outputs = getattr(self, "outputs", []) + out
        return out


def test_the_micro_model_judges_end_to_end(micro_model_dir, check_preferences):
    cfg = OmegaConf.create(
        {"name": "judge", "path": str(micro_model_dir), "swap": "both", "max_new_tokens": 12, "batch_size": 4}
    )
    judge = RecordingJudge(cfg, RewardContext())
    prompts, lists = ["sort: 3 1 2 ->", "sort: 5 4 ->"], [[" 1 2 3", " 3 2 1", " 2 1 3"], [" 4 5", " 5 4"]]
    p = judge.prefer(prompts, lists)
    check_preferences(p[:1], 1, 3)
    check_preferences(p[1:, :2, :2], 1, 2)
    assert p[1, 2, :2].isnan().all() and p[1, :2, 2].isnan().all()  # the padding of the shorter list
    assert len(judge.outputs) == 2 * (3 + 1)  # both orders of 3 + 1 pairs
    verdicts = [parse_pairwise(o) for o in judge.outputs]
    stats = judge.stats()
    assert stats["pairwise_unparsed"] == sum(v is None for v in verdicts)
    assert stats["unparsed_rate"] == pytest.approx(sum(v is None for v in verdicts) / 8)
    if all(v is None for v in verdicts):  # a random-init judge writes no decision: every pair is a tie
        assert torch.all(p[0, :3, :3] == 0.5) and stats["consistency"] == 1.0
    scores = judge.score(prompts, [lists[0], lists[1] + [" 4"]])
    assert scores.shape == (2, 3)
    assert judge.stats()["nan"] == int(scores.isnan().sum()) == judge.stats()["single_unparsed"]
