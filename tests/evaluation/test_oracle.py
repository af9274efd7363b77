"""eval=oracle on the sampler and the log-prob routine gives the figures of the evaluation it replaced.

``plain_evaluate`` is that evaluation as it was (one ``generate`` call per batch of left-padded prompts,
its own log-softmax for the KL), kept here as the independent computation to compare against. One
difference is deliberate: the old code also dropped <pad> tokens from samples that never reached EOS, which
removed a token the (untrained) model had sampled; a trained model does not sample <pad>, and the sampler
keeps what was sampled.
"""

from __future__ import annotations

from statistics import fmean

import pytest
import torch
from evaluation_helpers import make_inputs, policy_reference, sort_data
from omegaconf import OmegaConf

from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.base import render_rows


@torch.no_grad()
def plain_sample(model, tokenizer, prompts, max_new_tokens, batch_size, seed):
    tokenizer.padding_side = "left"
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    texts, ids = [], []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            if tokenizer.eos_token_id in row:  # generate pads a row only after its EOS
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            ids.append(row)
            texts.append(" " + tokenizer.decode(row, skip_special_tokens=True))
    torch.random.set_rng_state(state)
    return texts, ids


@torch.no_grad()
def plain_logps(model, tokenizer, prompts, responses):
    out = []
    for p, r in zip(prompts, responses):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + r])
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        out.append(float(logps[len(p_ids) - 1 :].gather(-1, ids[0, len(p_ids) :, None]).sum()))
    return out


def plain_evaluate(policy, reference, tokenizer, prompts, data, max_new_tokens, batch_size, seed):
    results, rewards = {}, {}
    for name, model in (("reference", reference), ("policy", policy)):
        texts, ids = plain_sample(model, tokenizer, prompts, max_new_tokens, batch_size, seed)
        rewards[name] = [data.reward_fn(p, t) for p, t in zip(prompts, texts)]
        results[f"{name}/oracle_reward"] = fmean(rewards[name])
        for metric, fn in data.strict_fns.items():
            results[f"{name}/{metric}"] = fmean(float(fn(p, t)) for p, t in zip(prompts, texts))
        results[f"{name}/length"] = fmean(len(r) for r in ids)
        if name == "policy":
            pi, ref = plain_logps(policy, tokenizer, prompts, ids), plain_logps(reference, tokenizer, prompts, ids)
            results["kl"] = fmean(a - b for a, b in zip(pi, ref))
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards["policy"], rewards["reference"])]
    results["win_rate"] = fmean(wins)
    results["reward_gain"] = results["policy/oracle_reward"] - results["reference/oracle_reward"]
    return results


def test_oracle_evaluator_reproduces_the_plain_evaluation(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    data = sort_data(24)
    settings = OmegaConf.create({"prompts": 20, "max_new_tokens": 12, "batch_size": 8, "seed": 7})
    got = EVALUATORS.get("oracle")(make_inputs(policy, reference, tokenizer, data), settings)
    want = plain_evaluate(policy, reference, tokenizer, data.eval_prompts[:20], data, 12, 8, 7)
    assert list(got.metrics) == list(want)  # the same keys, in the same order
    kl = got.metrics.pop("kl")
    assert kl == pytest.approx(want.pop("kl"), abs=1e-4)
    assert got.metrics == pytest.approx(want, abs=1e-12)


def test_oracle_rows_print_as_the_summary_table_did(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    settings = OmegaConf.create({"prompts": 8, "max_new_tokens": 8, "batch_size": 8, "seed": 0})
    got = EVALUATORS.get("oracle")(make_inputs(policy, reference, tokenizer, sort_data(8)), settings)
    m = got.metrics
    lines = render_rows(got.rows)
    assert lines[0] == f"{'oracle reward':22}{m['reference/oracle_reward']:>16.3f}{m['policy/oracle_reward']:>10.3f}"
    assert lines[1] == f"{'exact sort rate':22}{m['reference/exact_sort']:>16.3f}{m['policy/exact_sort']:>10.3f}"
    assert lines[2].startswith("valid permutation")
    assert lines[3] == f"{'response length':22}{m['reference/length']:>16.2f}{m['policy/length']:>10.2f}"
    assert lines[4] == f"{'win rate vs reference':22}{'':>16}{m['win_rate']:>10.3f}"
    assert lines[5] == f"{'KL(policy || ref)':22}{'':>16}{m['kl']:>10.3f}"


def test_oracle_on_a_dataset_without_oracle_says_so(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    data = sort_data(4)
    data.reward_fn = None
    got = EVALUATORS.get("oracle")(make_inputs(policy, reference, tokenizer, data), OmegaConf.create({}))
    assert "no oracle" in got.metrics["note"]
