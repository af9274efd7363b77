"""Rounds: each step's prompts and records, the round's figures, faults of the reward source, saved rounds."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.generation import SamplingSettings
from prefrun.generation.sampler import Samples
from prefrun.online.rounds import OnlineSettings, Rounds, score_safely
from prefrun.results.metrics_log import MetricsFile
from prefrun.rewards import build_reward


class FakePolicy:
    """Sample j of prompt p: ids [p, j], text "w" × (1 + (p + j) mod 5); EOS unless ``truncated``."""

    def __init__(self, truncated: bool = False):
        self.truncated = truncated
        self.calls = 0

    def sample(self, prompt_ids, settings):
        self.calls += 1
        k = settings.n
        ids = [[[p[0], j] for j in range(k)] for p in prompt_ids]
        texts = [["w" * (1 + (p[0] + j) % 5) for j in range(k)] for p in prompt_ids]
        eos = torch.full((len(prompt_ids), k), not self.truncated)
        return Samples([list(p) for p in prompt_ids], ids, texts, torch.full((len(prompt_ids), k), -1.0), eos, 0)

    def reference_logps(self, rows):
        return [[-1.5] * len(r["response_ids"]) for r in rows]


class Words:
    """A tokenizer stand-in: prompt text "p<i>" → ids [i]."""

    eos_token_id = 0


def _reward(fn: str):
    return build_reward(OmegaConf.create({"name": "python", "fn": f"online_rewards:{fn}"}))


def _rounds(tmp_path, fn="distinct_words", update_every=2, per_step=3, metrics=True, refresh=False, **settings):
    from prefrun.generation import encode_prompts  # noqa: F401 - patched below

    rounds = Rounds(
        prompts=[f"p{i}" for i in range(10)],
        tokenizer=Words(),
        settings=OnlineSettings(k=4, update_every=update_every, **settings),
        sampling=SamplingSettings(),
        reward=_reward(fn),
        shape="best_worst",
        min_k=2,
        with_reference=True,
        prompts_per_step=per_step,
        steps_per_round=update_every,
        refresh_reference=refresh,
        directory=tmp_path / "online",
        metrics=MetricsFile(tmp_path / "metrics.jsonl") if metrics else None,
        seed=0,
    )
    return rounds


@pytest.fixture(autouse=True)
def _prompt_ids(monkeypatch):
    import prefrun.generation as generation

    monkeypatch.setattr(generation, "encode_prompts", lambda tok, prompts, n: [[int(p[1:])] for p in prompts])


def test_each_step_trains_on_its_own_prompts_of_the_round_and_the_round_is_logged_once(tmp_path):
    rounds, io = _rounds(tmp_path), FakePolicy()
    first, metrics = rounds.records_for_step(0, io)
    second, again = rounds.records_for_step(1, io)
    assert io.calls == 1 and again is None  # one round, sampled once, for steps 1 and 2
    prompts = [rounds.order[i] for i in range(6)]
    assert [r["prompt_ids"] for r in first + second] == [[p] for p in prompts]
    assert all(set(r) == {"prompt_ids", "response_ids", "scores", "old_logps", "ref_logps"} for r in first)
    assert metrics["online/kl"] == pytest.approx(0.5) and metrics["online/truncation_rate"] == 0
    assert metrics["online/records"] == 6 and metrics["online/tie_rate"] == 0 and metrics["online/samples"] == 24
    scores = [s for r in rounds.current.rows for s in r["scores"]]
    assert metrics["online/reward_mean"] == pytest.approx(sum(scores) / 24)
    rounds.records_for_step(2, io)  # the next round: the permutation goes on, wrapping at 10 prompts
    assert [r["prompt_ids"][0] for r in rounds.current.rows] == [rounds.order[i % 10] for i in range(6, 12)]
    lines = [r for r in MetricsFile(tmp_path / "metrics.jsonl").rows()]
    assert [(r["stage"], r["step"], r["round"]) for r in lines] == [("online", 1, 0), ("online", 3, 1)]


def test_a_saved_round_is_read_back_as_it_was_and_a_changed_one_is_refused(tmp_path):
    rounds = _rounds(tmp_path)
    records, _ = rounds.records_for_step(0, FakePolicy())
    (saved,) = (tmp_path / "online").glob("round-00000-*.jsonl")
    resumed, io = _rounds(tmp_path, metrics=False), FakePolicy()
    assert resumed.records_for_step(1, io)[0] == rounds.records_for_step(1, FakePolicy())[0] and io.calls == 0
    assert resumed.records_for_step(0, io)[0] == records
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    rows[0]["scores"][0] = 99.0
    saved.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    with pytest.raises(PrefrunError, match="does not match the content hash in its name"):
        _rounds(tmp_path).records_for_step(0, FakePolicy())
    rounds.records_for_step(2, FakePolicy())
    rounds.resume_at(1)  # a checkpoint at step 1 trained on round 0 only
    assert [p.name[:11] for p in sorted((tmp_path / "online").iterdir())] == ["round-00000"]
    rounds.resume_at(None)
    assert not list((tmp_path / "online").iterdir())


def test_a_source_that_raises_on_some_samples_loses_only_those(tmp_path):
    source = _reward("flaky")
    prompts, lists = ["p0", "p1"], [["ab", "abc"], ["", "cd e"]]  # odd lengths raise, "" is NaN
    scores, errors = score_safely(source, prompts, lists)
    assert errors == [[False, True], [False, False]]
    assert scores[0, 0] == 1.0 and math.isnan(scores[0, 1]) and math.isnan(scores[1, 0]) and scores[1, 1] == 2.0
    rounds = _rounds(tmp_path, fn="flaky")
    rounds.records_for_step(0, FakePolicy())
    metrics = rounds.current.metrics
    assert metrics["online/score_errors"] > 0 and metrics["online/unscored"] >= metrics["online/score_errors"]
    with pytest.raises(PrefrunError, match="reward.fn='online_rewards:missing'"):
        score_safely(_reward("missing"), prompts, lists)


def test_a_step_without_one_scorable_sample_stops_the_run_and_saves_nothing(tmp_path):
    with pytest.raises(PrefrunError) as e:
        _rounds(tmp_path, fn="unscorable").records_for_step(0, FakePolicy())
    assert str(e.value) == (
        "step 1: reward=python could not score any of its 12 samples (0 raised, the rest NaN); the run stops: "
        "check the reward source (reward.*) on this task's responses"
    )
    assert not (tmp_path / "online").exists()


def test_tied_steps_are_skipped_and_counted_and_a_round_cut_short_is_warned(tmp_path, caplog):
    rounds = _rounds(tmp_path, fn="constant")
    with caplog.at_level(logging.WARNING, logger="prefrun"):
        records, metrics = rounds.records_for_step(0, FakePolicy(truncated=True))
    assert records == [] and metrics["online/skipped_steps"] == 2 and metrics["online/tie_rate"] == 1.0
    assert metrics["online/truncation_rate"] == 1.0
    text = caplog.text
    assert "step 1: all 3 lists are tied (online.k=4 samples each): the step is skipped, not trained on" in text
    assert "round 0: every sample reached online.max_new_tokens=24 without EOS" in text


def test_iterations_make_each_rounds_sampler_its_reference_and_keep_the_kl_to_the_sft_model(tmp_path):
    rounds = _rounds(tmp_path, refresh=True)
    records, metrics = rounds.records_for_step(0, FakePolicy())
    assert all(r["ref_logps"] == r["old_logps"] == [-1.0, -1.0] for r in records)  # the iterate that sampled
    assert rounds.current.rows[0]["sft_logps"] == [-1.5] * 4 and metrics["online/kl"] == pytest.approx(0.5)
