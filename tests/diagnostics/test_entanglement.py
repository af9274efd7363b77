"""Gradient entanglement (Yuan et al. 2024, arXiv 2410.13828): the metrics against a direct computation, and
the callback."""

from __future__ import annotations

import math
import random

import pytest
import torch
from conftest import cpu_dpo_config
from datasets import Dataset

from prefrun.data.collator import ListCollator
from prefrun.data.synthetic import SortTask, format_prompt, format_response, oracle_reward
from prefrun.data.tokenize import tokenize_record
from prefrun.diagnostics.entanglement import (
    PREFIX,
    GradientEntanglementCallback,
    default_parameters,
    entanglement,
    select_parameters,
    summarize,
)
from prefrun.objectives import get_objective
from prefrun.trainers.list_trainer import ListTrainer

KEYS = ("inner", "norm_w", "norm_l", "cosine", "ratio", "pred_dlogp_chosen", "pred_dlogp_rejected")


def _records(n: int, seed: int = 0) -> list[dict]:
    """Sort prompts with a correct (chosen) and a half-reversed (rejected) answer."""
    task, rng = SortTask(), random.Random(seed)
    records = []
    for _ in range(n):
        nums = task.sample_numbers(rng)
        prompt, ordered = format_prompt(nums), sorted(nums)
        responses = [format_response(ordered), format_response(ordered[:4][::-1] + ordered[4:])]
        records.append(
            {"prompt": prompt, "responses": responses, "scores": [oracle_reward(prompt, r) for r in responses]}
        )
    return records


def _tokenized(records: list[dict], tokenizer) -> list[dict]:
    return [{**tokenize_record(r, tokenizer, 64, 64), "scores": r["scores"]} for r in records]


@pytest.fixture()
def model64(micro_model):
    model, tokenizer = micro_model
    return model.double().eval(), tokenizer


def _direct_grad(model, params, prompt_ids, response_ids) -> torch.Tensor:
    """Flattened float64 .grad of Σ log π(response | prompt) over ``params``: one unpadded row, own readout."""
    model.zero_grad(set_to_none=True)
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    targets = ids[0, 1:]
    start = len(prompt_ids) - 1
    logps[torch.arange(start, targets.numel()), targets[start:]].sum().backward()
    flat = torch.cat([p.grad.reshape(-1).double() for p in params])
    model.zero_grad(set_to_none=True)
    return flat


def _direct(model, params, rows: list[dict]) -> dict[str, float]:
    inner, sq_w, sq_l, cos = [], [], [], []
    for row in rows:
        g_w = _direct_grad(model, params, row["prompt_ids"], row["response_ids"][0])
        g_l = _direct_grad(model, params, row["prompt_ids"], row["response_ids"][1])
        inner.append((g_w @ g_l).item())
        sq_w.append((g_w @ g_w).item())
        sq_l.append((g_l @ g_l).item())
        cos.append(inner[-1] / math.sqrt(sq_w[-1] * sq_l[-1]))
    n = len(rows)
    return {
        "inner": sum(inner) / n,
        "norm_w": math.sqrt(sum(sq_w) / n),
        "norm_l": math.sqrt(sum(sq_l) / n),
        "cosine": sum(cos) / n,
    }


def test_default_parameters_are_the_last_block_and_the_tied_head_once(model64):
    model, _ = model64
    names = {id(p): n for n, p in model.named_parameters()}
    chosen = [names[id(p)] for p in default_parameters(model)]
    assert len(chosen) == len(set(chosen))
    assert "model.embed_tokens.weight" in chosen  # tied: the LM head's weight is the embedding, included once
    assert all(n.startswith("model.layers.1.") for n in chosen if n != "model.embed_tokens.weight")
    assert len(chosen) == 1 + sum(1 for n in names.values() if n.startswith("model.layers.1."))


@pytest.mark.parametrize("patterns", [None, [r"layers\.0\.mlp", r"norm\.weight$"]], ids=["default", "regex"])
def test_inner_product_and_norms_match_two_separate_backward_passes(model64, patterns):
    """Batched, padded, autograd.grad per example == flattened .grad of separate unpadded backwards, float64."""
    model, tokenizer = model64
    rows = _tokenized(_records(3), tokenizer)
    rows[1]["response_ids"][1] = rows[1]["response_ids"][1][:3]  # uneven lengths: padding must not leak in
    params = default_parameters(model) if patterns is None else select_parameters(model, patterns)
    batch = ListCollator(tokenizer.pad_token_id)(rows)
    got = entanglement(model, batch, params=patterns)
    want = _direct(model, params, rows)
    for key, value in want.items():
        assert got[PREFIX + key] == pytest.approx(value, rel=1e-5), key
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    # The two-batch form (chosen rows, rejected rows) gives the same numbers.
    collate = ListCollator(tokenizer.pad_token_id)
    batch_w = collate([{**r, "response_ids": r["response_ids"][:1], "scores": r["scores"][:1]} for r in rows])
    batch_l = collate([{**r, "response_ids": r["response_ids"][1:], "scores": r["scores"][1:]} for r in rows])
    split = entanglement(model, batch_w, batch_l, params=patterns)
    for key in KEYS:
        assert split[PREFIX + key] == pytest.approx(got[PREFIX + key], rel=1e-9, abs=1e-12), key


def test_ratio_uses_the_min_of_both_norms():
    """‖g_w‖² = 4, ‖g_l‖² = 1, ⟨g_w,g_l⟩ = 2: ratio 2, entangled (the reference code's min(‖g_w‖², ‖g_w‖²): 0.5)."""
    out = summarize([2.0], [4.0], [1.0])
    assert out[PREFIX + "ratio"] == pytest.approx(2.0)
    assert out[PREFIX + "cosine"] == pytest.approx(1.0)
    assert out[PREFIX + "pred_dlogp_chosen"] == 1.0  # 4 - 2 > 0: chosen rises
    assert out[PREFIX + "pred_dlogp_rejected"] == 1.0  # 2 - 1 > 0: rejected rises too (entanglement)
    swapped = summarize([2.0], [1.0], [4.0])
    assert swapped[PREFIX + "ratio"] == pytest.approx(2.0)
    assert (swapped[PREFIX + "pred_dlogp_chosen"], swapped[PREFIX + "pred_dlogp_rejected"]) == (-1.0, -1.0)


def test_ratio_on_the_model_when_the_norms_differ(model64):
    """A long chosen and a one-token rejected response: ‖g_w‖ ≠ ‖g_l‖ and the ratio divides by the smaller."""
    model, tokenizer = model64
    rows = _tokenized(_records(2), tokenizer)
    for row in rows:
        row["response_ids"][1] = row["response_ids"][1][:1]
    out = entanglement(model, ListCollator(tokenizer.pad_token_id)(rows))
    ww, ll, ip = out[PREFIX + "norm_w"] ** 2, out[PREFIX + "norm_l"] ** 2, out[PREFIX + "inner"]
    assert ll < ww and not math.isclose(ww, ll, rel_tol=1e-2)  # min(‖g_w‖², ‖g_w‖²) would be wrong here
    assert out[PREFIX + "ratio"] == pytest.approx(ip / min(ww, ll), rel=1e-9)
    assert out[PREFIX + "ratio"] != pytest.approx(ip / max(ww, ll), rel=1e-3)


def _train(model_dir, tmp_path, dataset, every: int | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = cpu_dpo_config(tmp_path / f"out{every}", 4, 3, 1e-2)
    torch.manual_seed(0)
    trainer = ListTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        objective=get_objective("dpo"),
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    if every is not None:
        callback = GradientEntanglementCallback(trainer, every=every, probe_size=4)
        trainer.add_callback(callback)
        # The trainer's readout (fused LM head) gives the same metrics as the plain logits readout.
        probe = trainer.data_collator([dataset[i] for i in range(4)])
        fused = entanglement(trainer.model, probe, logps_fn=callback._logps_fn())
        plain = entanglement(trainer.model, probe)
        for key in KEYS:
            assert fused[PREFIX + key] == pytest.approx(plain[PREFIX + key], rel=1e-4, abs=1e-6), key
    policy_forwards = trainer.policy_forwards
    trainer.train()
    assert trainer.policy_forwards - policy_forwards == 3  # the probe's forwards are not counted
    return [row for row in trainer.state.log_history if "loss" in row]


def test_callback_logs_every_step_and_leaves_training_unchanged(micro_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    dataset = Dataset.from_list(_tokenized(_records(8, seed=1), tokenizer))
    plain = _train(micro_model_dir, tmp_path, dataset, every=None)
    probed = _train(micro_model_dir, tmp_path, dataset, every=1)
    assert [r["loss"] for r in probed] == [r["loss"] for r in plain]
    assert [r.get("grad_norm") for r in probed] == [r.get("grad_norm") for r in plain]
    assert len(probed) == 3
    for row in probed:
        for key in (*KEYS, "realised_dlogp_chosen", "realised_dlogp_rejected"):
            assert math.isfinite(row[PREFIX + key]), (row["step"], key)
    assert not any(k.startswith(PREFIX) for row in plain for k in row)
