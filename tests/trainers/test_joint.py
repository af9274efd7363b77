"""Joint log-probs (DOVE / jpo): the trainer scores prompt tokens too, and per-response prompts reach the model.

On the micro model: the joint log-prob of each (prompt, response) sequence equals a direct computation from
the model's logits, and with one shared prompt jpo trains step for step like DPO (log π(x) cancels).
"""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_dpo_config
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefrun.data.synthetic import SortTask, format_prompt, format_response, oracle_reward
from prefrun.data.tokenize import tokenize_record
from prefrun.objectives import get_objective
from prefrun.trainers.list_trainer import ListTrainer

BATCH = 4


def _records(n: int, joint: bool) -> list[dict]:
    """Sort prompts with a sorted (chosen) and a reversed (rejected) answer; ``joint``: the rejected answers the
    next record's prompt."""
    import random

    task, rng = SortTask(), random.Random(0)
    numbers = [task.sample_numbers(rng) for _ in range(n)]
    records = []
    for i, nums in enumerate(numbers):
        other = numbers[(i + 1) % n] if joint else nums
        prompts = [format_prompt(nums), format_prompt(other)]
        responses = [format_response(sorted(nums)), format_response(sorted(other)[::-1])]
        scores = [oracle_reward(p, r) for p, r in zip(prompts, responses)]
        records.append({"prompt": prompts[0], "prompts": prompts, "responses": responses, "scores": scores})
    return records


def _trainer(model_dir, tmp_path, name: str, records: list[dict], steps: int = 3) -> ListTrainer:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [{**tokenize_record(r, tokenizer, 64, 64, joint=True), "scores": r["scores"]} for r in records]
    return ListTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        objective=get_objective(name, beta=0.1),
        args=cpu_dpo_config(tmp_path / name, BATCH, steps, 1e-3, train_sampling_strategy="sequential"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def _step_losses(model_dir, tmp_path, records: list[dict]) -> dict[str, list[float]]:
    """The logged loss of each of 3 training steps, for dpo and for jpo from the same start on the same data."""
    losses = {}
    for name in ("dpo", "jpo"):
        trainer = _trainer(model_dir, tmp_path, name, records)
        trainer.train()
        losses[name] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses


def _direct_joint_logp(model, ids: list[int]) -> float:
    """Σ_{t ≥ 1} log p(ids[t] | ids[:t]) from the model's logits: every token but the first (BOS) is scored."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])
    return logp.sum().item()


def test_joint_logps_score_each_responses_own_prompt_and_response(micro_model_dir, tmp_path):
    trainer = _trainer(micro_model_dir, tmp_path, "jpo", _records(BATCH, joint=True))
    data = trainer.train_dataset
    rows = [data[i] for i in range(BATCH)]
    assert all(r["response_prompt_ids"][0] != r["response_prompt_ids"][1] for r in rows)
    assert all(p[0] == trainer.processing_class.bos_token_id for r in rows for p in r["response_prompt_ids"])
    batch = trainer.data_collator(rows)
    model = trainer.model.eval()
    with torch.no_grad():
        logps, lengths = trainer._response_logps(model, batch)
    worst = 0.0
    for n, (b, k) in enumerate(batch["list_index"].tolist()):
        ids = rows[b]["response_prompt_ids"][k] + rows[b]["response_ids"][k]
        direct = _direct_joint_logp(model, ids)
        worst = max(worst, abs(logps[n].item() - direct))
        assert logps[n].item() == pytest.approx(direct, abs=1e-4)
        assert lengths[n].item() == len(ids) - 1
    print(f"joint log-probs vs a direct forward: max |diff| {worst:.1e}")
    # the precomputed reference log-probs are joint too (the initial policy is the reference)
    ref = torch.tensor(data["ref_logps"])
    assert torch.allclose(ref[batch["list_index"][:, 0], batch["list_index"][:, 1]], logps, atol=1e-4)


def test_jpo_with_one_shared_prompt_trains_step_for_step_like_dpo(micro_model_dir, tmp_path):
    """log π(x) is the same in both joint log-probs, so it cancels from the margin, the loss and the gradient."""
    losses = _step_losses(micro_model_dir, tmp_path, _records(8, joint=False))
    assert len(losses["dpo"]) == 3
    assert losses["dpo"][0] != losses["dpo"][-1]  # the policy moved, so the comparison means something
    print(f"jpo vs dpo on one prompt: max |loss diff| {max(abs(a - b) for a, b in zip(*losses.values())):.1e}")
    assert losses["jpo"] == pytest.approx(losses["dpo"], abs=1e-5)


def test_jpo_on_joint_pairs_differs_from_dpo_on_the_same_pairs(micro_model_dir, tmp_path):
    """With different prompts log π(x_w) − log π(x_l) no longer cancels: the objectives part ways."""
    losses = _step_losses(micro_model_dir, tmp_path, _records(8, joint=True))
    assert abs(losses["jpo"][-1] - losses["dpo"][-1]) > 1e-3
