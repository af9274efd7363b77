"""decode=bon on the micro model: the argmax of the reward source's scores, one prefill per prompt, N = 1 is
plain sampling; ties broken as documented; bad settings are one-line errors naming decode.<key>.

Every expected answer is recomputed here: the N samples drawn by the sampler directly, scored by the scoring
function itself (not through the reward source), the argmax taken in plain Python.
"""

from __future__ import annotations

import math

import pytest
import scorers
import torch
from omegaconf import OmegaConf

from prefrun.data.synthetic import SortTask, eval_prompts
from prefrun.decoding import build_decoder
from prefrun.decoding.bon import best_index
from prefrun.errors import PrefrunError
from prefrun.evaluation.infalign import bon_kl
from prefrun.generation import SamplingSettings, encode_prompts, sample
from prefrun.rewards import build_reward

SETTINGS = SamplingSettings(backend="hf", top_k=0, max_new_tokens=8, batch_size=4, seed=3)


def python_source(fn: str = "crc_score"):
    return build_reward(OmegaConf.create({"name": "python", "fn": f"scorers:{fn}"}))


def bon(n: int, source=None, **extra):
    cfg = OmegaConf.create({"name": "bon", "n": n, "reward": None, "calibration": 0, **extra})
    source = source or python_source()
    return build_decoder(cfg, reward=lambda: source), source


def prompts_of(tokenizer, count: int = 6):
    prompts = eval_prompts(SortTask(), count, seed=5)
    return prompts, encode_prompts(tokenizer, prompts, 64)


def test_bon_answers_are_the_argmax_of_the_scores_of_the_samplers_n_samples(micro_model):
    model, tokenizer = micro_model
    prompts, ids = prompts_of(tokenizer)
    decoder, source = bon(4)
    decoded = decoder.decode(model, tokenizer, prompts, ids, SETTINGS)
    drawn = sample(model, tokenizer, ids, SamplingSettings(**{**SETTINGS.__dict__, "n": 4}))
    want = [max(row, key=scorers.crc) for row in drawn.texts]  # max keeps the first of equals
    assert [row[0] for row in decoded.samples.texts] == want
    assert len(set(drawn.texts[0])) > 1  # the pick was a real choice
    best = [max(range(4), key=lambda k, row=row: scorers.crc(row[k])) for row in drawn.texts]
    assert decoded.samples.logps[:, 0].tolist() == [drawn.logps[b, k].item() for b, k in enumerate(best)]
    assert decoded.samples.token_ids == [[drawn.token_ids[b][k]] for b, k in enumerate(best)]
    assert source.stats()["score_calls"] == 1 and decoded.report["reward_calls"] == pytest.approx(1 / 6)
    assert decoded.report["reward_responses"] == 4.0
    assert decoded.report["kl_bound"] == pytest.approx(math.log(4) - 3 / 4)


def test_bon_prefills_each_prompt_once_for_its_n_samples(micro_model, monkeypatch):
    model, tokenizer = micro_model
    prompts, ids = prompts_of(tokenizer)
    calls = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw["input_ids"].shape) or generate(**kw))
    decoded = bon(8)[0].decode(model, tokenizer, prompts, ids, SETTINGS)
    assert len(calls) == 2  # 6 prompts, 4 per generate call
    assert [rows for rows, _ in calls] == [4 * 8, 2 * 8]  # each call decodes every prompt's 8 samples
    assert decoded.report["prefills"] == 1.0  # one whole read of each prompt, shared by its 8 samples
    plain = build_decoder(OmegaConf.create({"name": "sample"})).decode(model, tokenizer, prompts, ids, SETTINGS)
    assert plain.report["prefills"] == 1.0
    assert decoded.report["forward_tokens"] > 4 * plain.report["forward_tokens"]  # 8 samples' decoding


def test_bon_of_one_is_plain_sampling_with_the_same_seed(micro_model):
    model, tokenizer = micro_model
    prompts, ids = prompts_of(tokenizer)
    decoded = bon(1)[0].decode(model, tokenizer, prompts, ids, SETTINGS)
    plain = sample(model, tokenizer, ids, SETTINGS)
    assert decoded.samples.texts == plain.texts and decoded.samples.token_ids == plain.token_ids
    assert torch.equal(decoded.samples.logps, plain.logps)
    assert decoded.report["kl_bound"] == 0.0


def test_ties_go_to_the_first_best_or_to_a_seeded_uniform_pick_among_the_best():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0], [math.nan, 0.5, math.nan, 0.5], [math.nan] * 4])
    assert best_index(scores, "first").tolist() == [1, 1, 0]  # NaN never wins; an all-NaN row keeps its first
    picks = torch.stack([best_index(scores, "random", seed) for seed in range(200)])
    assert set(picks[:, 0].tolist()) == {1, 2} and set(picks[:, 1].tolist()) == {1, 3}
    assert abs((picks[:, 0] == 1).double().mean().item() - 0.5) < 0.12  # uniform among the two
    assert torch.equal(best_index(scores, "random", 7), best_index(scores, "random", 7))


def test_the_plugin_kl_stays_near_the_bound_on_a_continuous_reward(micro_model):
    model, tokenizer = micro_model
    prompts, ids = prompts_of(tokenizer, 12)
    decoder, _ = bon(4, calibration=32)
    report = decoder.decode(model, tokenizer, prompts, ids, SETTINGS).report
    assert report["kl_plugin"] <= bon_kl(4) + 0.5  # Monte Carlo on 12 prompts: the bound within noise
    assert 0.5 < report["calibrated_reward"] <= 1.0  # a best of 4 beats most fresh samples (E = 0.8)


def test_bad_decode_settings_are_one_line_errors_naming_the_key():
    with pytest.raises(PrefrunError, match=r"^decode\.n=0: must be an integer ≥ 1"):
        bon(0)
    with pytest.raises(PrefrunError, match=r"^decode\.tie_break='last'"):
        bon(2, tie_break="last")
    cfg = OmegaConf.create({"name": "bon", "n": 2})
    with pytest.raises(PrefrunError, match=r"decode=bon ranks samples by a reward source and has none"):
        build_decoder(cfg, reward=None)
    with pytest.raises(PrefrunError, match=r"unknown decoder 'nope'; available: bon, dbs, sample \(decode=<name>\)"):
        build_decoder(OmegaConf.create({"name": "nope"}))
