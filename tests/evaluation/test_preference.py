"""eval=preference: implicit-reward accuracy and margins, checked against a hand computation on the micro model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from evaluation_helpers import make_inputs, policy_reference
from omegaconf import OmegaConf

from prefrun.data.sources import RunData
from prefrun.evaluation import EVALUATORS
from prefrun.objectives import get_objective

RECORDS = [
    {"prompt": "sort: 3 1 2 ->", "responses": [" 1 2 3", " 3 1 2", " 1 3 2"], "scores": [1.0, 0.0, 0.7]},
    {"prompt": "sort: 9 4 ->", "responses": [" 9 4", " 4 9"], "scores": [0.0, 1.0]},
    {"prompt": "sort: 5 6 ->", "responses": [" 5 6", " 6 5"], "scores": [0.5, 0.5]},  # a tie: no pair
    {"prompt": "sort: 8 2 7 ->", "responses": [" 2 7 8", " 8 7", " 2 8 7"], "scores": [1.0, 0.0, 0.6]},
    {"prompt": "sort: 1 0 ->", "responses": [" 0 1", " 1"], "scores": [1.0, 0.0]},
]
PAIRS = [(r["prompt"], r["responses"][int(np.argmax(r["scores"]))], r["responses"][int(np.argmin(r["scores"]))])
         for r in RECORDS if max(r["scores"]) > min(r["scores"])]  # fmt: skip


@torch.no_grad()
def by_hand(model, tokenizer, prompt: str, response: str) -> tuple[float, int]:
    """log π(response + EOS | prompt) from the full logits, and the number of scored tokens."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(prompt + response, add_special_tokens=False)["input_ids"][len(p) :] + [tokenizer.eos_token_id]
    ids = torch.tensor([p + r])
    logps = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return float(sum(logps[len(p) - 1 + t, tok] for t, tok in enumerate(r))), len(r)


def summary(margins: np.ndarray) -> dict[str, float]:
    q25, q50, q75 = np.quantile(margins, [0.25, 0.5, 0.75])
    accuracy = float(np.mean((margins > 0) + 0.5 * (margins == 0)))
    return {"accuracy": accuracy, "margin_mean": margins.mean(), "margin_q25": q25, "margin_median": q50,
            "margin_q75": q75}  # fmt: skip


def run(models, objective):
    policy, reference, tokenizer = models
    data = RunData(train=[], eval_records=RECORDS, held_out=5)
    inputs = make_inputs(policy, reference, tokenizer, data, objective=objective)
    return EVALUATORS.get("preference")(inputs, OmegaConf.create({"batch_size": 2})).metrics


def test_dpo_policy_is_scored_on_its_implicit_reward(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    got = run((policy, reference, tokenizer), get_objective("dpo", beta=0.5))
    assert (got["pairs"], got["ties_dropped"], got["records"], got["held_out_from_train"]) == (4, 1, 5, 5)
    lp = np.array([[by_hand(policy, tokenizer, x, y)[0] for y in (w, lo)] for x, w, lo in PAIRS])
    ref = np.array([[by_hand(reference, tokenizer, x, y)[0] for y in (w, lo)] for x, w, lo in PAIRS])
    rewards = 0.5 * (lp - ref)
    for key, value in summary(rewards[:, 0] - rewards[:, 1]).items():
        assert got[key] == pytest.approx(value, abs=1e-4), key
    for key, value in summary(0.5 * (ref[:, 0] - ref[:, 1])).items():  # the reference on its own log-probs
        assert got[f"reference_{key}"] == pytest.approx(value, abs=1e-4), key
    assert got["beta"] == 0.5


def test_reference_free_objective_is_scored_on_its_mean_log_prob(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    got = run((policy, reference, tokenizer), get_objective("simpo"))
    assert got["reward"] == "log pi / |y|"
    mean = np.array([[np.divide(*by_hand(policy, tokenizer, x, y)) for y in (w, lo)] for x, w, lo in PAIRS])
    for key, value in summary(mean[:, 0] - mean[:, 1]).items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    ref_mean = np.array([[np.divide(*by_hand(reference, tokenizer, x, y)) for y in (w, lo)] for x, w, lo in PAIRS])
    assert got["reference_accuracy"] == pytest.approx(summary(ref_mean[:, 0] - ref_mean[:, 1])["accuracy"])


def test_the_policy_identical_to_its_reference_ties_every_pair(micro_model):
    reference, tokenizer = micro_model
    got = run((reference, reference, tokenizer), get_objective("dpo", beta=0.1))
    assert got["accuracy"] == 0.5 and got["margin_mean"] == 0.0  # ties count ½


def test_held_out_records_without_an_untied_pair_give_a_note(micro_model):
    policy, reference, tokenizer = policy_reference(micro_model)
    data = RunData(train=[], eval_records=[RECORDS[2]])
    inputs = make_inputs(policy, reference, tokenizer, data, objective=get_objective("dpo"))
    got = EVALUATORS.get("preference")(inputs, OmegaConf.create({}))
    assert got.metrics["ties_dropped"] == 1
    assert "none of the 1 held-out records" in got.metrics["note"]
