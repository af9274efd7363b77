"""eval=oracle under a decoder: the policy's column is the decoder's answers, the reference's stays plain.

The expected policy figures are recomputed from the sampler's N samples, the argmax of the scoring function
taken here, and the oracle applied to those answers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from statistics import fmean

import pytest
import scorers
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from evaluation_helpers import make_inputs, policy_reference, sort_data  # noqa: E402

from prefrun.errors import PrefrunError  # noqa: E402
from prefrun.evaluation import EVALUATORS  # noqa: E402
from prefrun.evaluation.stats import win_rate  # noqa: E402
from prefrun.generation import SamplingSettings, encode_prompts, sample  # noqa: E402
from prefrun.rewards import build_reward  # noqa: E402

ORACLE = {"prompts": 10, "max_new_tokens": 12, "batch_size": 8, "seed": 7}


def test_the_oracle_scores_the_policys_best_of_n_against_the_sampled_reference(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    data = sort_data(12)
    source = build_reward(OmegaConf.create({"name": "python", "fn": "scorers:crc_score"}))
    inputs = make_inputs(policy, reference, tokenizer, data, reward=source)
    decode = {"name": "bon", "n": 4, "reward": None, "tie_break": "first", "calibration": 0}
    got = EVALUATORS.get("oracle")(inputs, OmegaConf.create({**ORACLE, "decode": decode})).metrics
    plain = EVALUATORS.get("oracle")(inputs, OmegaConf.create(ORACLE)).metrics

    prompts = data.eval_prompts[:10]
    ids = encode_prompts(tokenizer, prompts, 64)
    settings = SamplingSettings(n=4, top_k=0, max_new_tokens=12, batch_size=8, seed=7)
    best = [max(row, key=scorers.crc) for row in sample(policy, tokenizer, ids, settings).texts]
    rewards = [data.reward_fn(p, t) for p, t in zip(prompts, best)]
    assert got["policy/oracle_reward"] == pytest.approx(fmean(rewards))
    reference_rewards = [
        data.reward_fn(p, row[0])
        for p, row in zip(
            prompts, sample(reference, tokenizer, ids, SamplingSettings(**{**settings.__dict__, "n": 1})).texts
        )
    ]
    assert got["win_rate"] == pytest.approx(win_rate(rewards, reference_rewards))
    for key in ("reference/oracle_reward", "reference/exact_sort", "reference/length"):
        assert got[key] == plain[key]  # the reference's column is plain sampling, as without a decoder
    assert got["decode/n"] == 4.0 and got["decode/prefills"] == 1.0 and "decode/kl_bound" in got


def test_a_decoder_needing_a_reward_source_fails_in_one_line_when_the_run_has_none(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    inputs = make_inputs(policy, reference, tokenizer, sort_data(4), reward=None)
    settings = OmegaConf.create({**ORACLE, "decode": {"name": "bon", "n": 2, "reward": None}})
    with pytest.raises(PrefrunError, match=r"^decode=bon needs a reward source and the run has none: set reward="):
        EVALUATORS.get("oracle")(inputs, settings)


def test_decode_reward_gives_the_decoder_a_source_of_its_own(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    data = sort_data(6)
    inputs = make_inputs(policy, reference, tokenizer, data, reward=None)  # the run has no source
    own = {"name": "python", "fn": "scorers:length_score"}
    decode = {"name": "bon", "n": 3, "reward": own, "calibration": 0}
    settings = OmegaConf.create({**ORACLE, "prompts": 6, "decode": decode})
    got = EVALUATORS.get("oracle")(inputs, settings).metrics
    ids = encode_prompts(tokenizer, data.eval_prompts[:6], 64)
    drawn = sample(policy, tokenizer, ids, SamplingSettings(n=3, top_k=0, max_new_tokens=12, batch_size=8, seed=7))
    longest = [max(row, key=lambda t: len(t.split())) for row in drawn.texts]
    want = fmean(data.reward_fn(p, t) for p, t in zip(data.eval_prompts[:6], longest))
    assert got["policy/oracle_reward"] == pytest.approx(want)
    assert got["decode/sample_reward"] == pytest.approx(fmean(len(t.split()) for row in drawn.texts for t in row))
