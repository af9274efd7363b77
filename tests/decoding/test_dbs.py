"""decode=dbs: one group step subtracts exactly λ·count, λ = 0 is plain beam search in every group (checked
against a plain beam search written out here, one prompt at a time, no padding), a positive λ spreads the
beams, reranking picks the source's best beam, and prefrun never asks generate for group beam search.
"""

from __future__ import annotations

import pytest
import scorers
import torch
from omegaconf import OmegaConf

from prefrun.data.synthetic import SortTask, eval_prompts
from prefrun.decoding import build_decoder
from prefrun.decoding.dbs import NEG, group_step
from prefrun.errors import PrefrunError
from prefrun.generation import SamplingSettings, encode_prompts
from prefrun.rewards import build_reward

SETTINGS = SamplingSettings(backend="hf", max_new_tokens=6, batch_size=3)


def dbs(**settings):
    cfg = OmegaConf.create({"name": "dbs", "beams": 4, "groups": 4, "diversity": 0.5, "rerank": False, **settings})
    source = build_reward(OmegaConf.create({"name": "python", "fn": "scorers:crc_score"}))
    return build_decoder(cfg, reward=lambda: source)


def prompts_of(tokenizer, count: int = 4):
    prompts = eval_prompts(SortTask(), count, seed=5)
    return prompts, encode_prompts(tokenizer, prompts, 64)


@torch.no_grad()
def plain_beam_search(model, prompt: list[int], width: int, steps: int, eos: int, pad: int) -> list[list[int]]:
    """Textbook beam search of ``width`` beams (ended beams extend by padding at no cost), best log-prob first."""
    beams = [([], 0.0, False)] + [([], NEG, False)] * (width - 1)
    for _ in range(steps):
        candidates = []
        for k, (seq, score, ended) in enumerate(beams):
            if ended:
                candidates.append((score, k, pad))
                continue
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + seq])).logits[0, -1].float(), -1)
            candidates += [(score + float(v), k, t) for t, v in enumerate(logp)]
        candidates.sort(key=lambda c: -c[0])
        beams = [(beams[k][0] + [t], s, beams[k][2] or t == eos) for s, k, t in candidates[:width]]
        if all(e for _, _, e in beams):
            break
    return [seq for seq, _, _ in beams]


def test_one_group_step_subtracts_lambda_times_the_earlier_groups_counts():
    scores = torch.tensor([[0.0, -1.0]])
    logp = torch.log(torch.tensor([[[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]]]))
    counts = torch.tensor([[2.0, 0.0, 1.0]])  # earlier groups chose token 0 twice, token 2 once
    top, source, token = group_step(scores, logp, counts, 0.4, torch.tensor([[True, True]]))
    want = {(k, t): float(scores[0, k] + logp[0, k, t] - 0.4 * counts[0, t]) for k in range(2) for t in range(3)}
    best = sorted(want.items(), key=lambda kv: -kv[1])[:2]
    assert [(int(s), int(t)) for s, t in zip(source[0], token[0])] == [k for k, _ in best]
    assert top[0].tolist() == pytest.approx([v for _, v in best])
    _, _, token_free = group_step(scores, logp, counts, 0.0, torch.tensor([[True, True]]))
    assert token_free[0, 0] == 0  # without the penalty token 0 of beam 0 leads


def test_without_diversity_every_group_is_plain_beam_search(micro_model):
    model, tokenizer = micro_model
    prompts, ids = prompts_of(tokenizer)
    decoded = dbs(beams=4, groups=2, diversity=0.0).decode(model, tokenizer, prompts, ids, SETTINGS)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for b, prompt in enumerate(ids):
        want = plain_beam_search(model, prompt, 2, SETTINGS.max_new_tokens, eos, pad)
        cut = [seq[: seq.index(eos) + 1] if eos in seq else seq for seq in want]
        got = decoded.beams.token_ids[b]
        assert got[0::2] == got[1::2] == cut  # the two groups agree, each the plain search's two beams
    assert decoded.report["unique"] == 2.0


def test_diversity_spreads_the_beams_at_a_cost_in_log_probability(micro_model):
    model, tokenizer = micro_model
    prompts, ids = prompts_of(tokenizer, 6)
    plain = dbs(beams=4, groups=1, diversity=0.0).decode(model, tokenizer, prompts, ids, SETTINGS).report
    diverse = dbs(beams=4, groups=4, diversity=2.0).decode(model, tokenizer, prompts, ids, SETTINGS).report
    assert diverse["hamming"] > plain["hamming"]
    assert diverse["beam_logp"] < plain["beam_logp"]  # plain beam search keeps the most likely beams


def test_rerank_answers_with_the_sources_best_beam_and_generate_is_never_asked_for_groups(micro_model, monkeypatch):
    model, tokenizer = micro_model
    prompts, ids = prompts_of(tokenizer)
    calls = []
    monkeypatch.setattr(model, "generate", lambda *a, **kw: calls.append(kw))
    decoded = dbs(rerank=True).decode(model, tokenizer, prompts, ids, SETTINGS)
    assert not any("num_beam_groups" in kw or "diversity_penalty" in kw for kw in calls) and not calls
    assert [row[0] for row in decoded.samples.texts] == [max(row, key=scorers.crc) for row in decoded.beams.texts]
    assert decoded.report["reward_calls"] == pytest.approx(1 / len(prompts))


def test_bad_dbs_settings_are_one_line_errors():
    with pytest.raises(PrefrunError, match=r"^decode\.beams=6 does not split into decode\.groups=4"):
        dbs(beams=6, groups=4)
    with pytest.raises(PrefrunError, match=r"^decode\.diversity=-1"):
        dbs(diversity=-1)
    with pytest.raises(PrefrunError, match=r"rerank=true ranks beams by a reward source and has none"):
        build_decoder(OmegaConf.create({"name": "dbs", "beams": 2, "groups": 2, "rerank": True}), reward=None)
