"""ListTrainer guarantees: every objective trains, one policy forward per batch, reference log-probs computed once.

All cases run on the micro model (2-layer, 32-wide Llama) with a fixed small batch of sort-task records.
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import cpu_dpo_config
from datasets import Dataset

from prefrun.data.synthetic import SortTask, format_prompt, format_response, oracle_reward
from prefrun.data.tokenize import tokenize_record
from prefrun.objectives import available_objectives, get_objective, get_spec
from prefrun.trainers.list_trainer import ListTrainer
from prefrun.trainers.ref_cache import ReferenceCache, model_fingerprint, tokenizer_fingerprint

BATCH = 4
# Reversing the first m numbers of the sorted answer costs m(m-1)/2 inversions: 0, 1, 3, 6 -> distinct scores.
REVERSED_PREFIX = (0, 2, 3, 4)
REFERENCE_FREE = ("simpo", "orpo", "pro")


def _records(n: int, k: int, seed: int = 0) -> list[dict]:
    """``n`` sort prompts, each with ``k`` responses of strictly decreasing oracle score (best first)."""
    task, rng = SortTask(), random.Random(seed)
    prefixes = (0, 4) if k == 2 else REVERSED_PREFIX[:k]
    records = []
    for _ in range(n):
        nums = task.sample_numbers(rng)
        prompt, ordered = format_prompt(nums), sorted(nums)
        responses = [format_response(ordered[:m][::-1] + ordered[m:]) for m in prefixes]
        records.append(
            {"prompt": prompt, "responses": responses, "scores": [oracle_reward(prompt, r) for r in responses]}
        )
    return records


def _dataset(records: list[dict], tokenizer) -> Dataset:
    extras = ("scores", "labels", "baseline_logps", "old_logps")
    return Dataset.from_list(
        [{**tokenize_record(r, tokenizer, 64, 64), **{k: r[k] for k in extras if k in r}} for r in records]
    )


def _trainer(model_dir, tmp_path, objective, dataset, *, steps=5, lr=1e-3, ref_cache=None, shared_prompt=False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = cpu_dpo_config(tmp_path / "out", BATCH, steps, lr, logging_steps=1000)
    return ListTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        objective=objective,
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        ref_cache=ref_cache,
        shared_prompt=shared_prompt,
    )


def _batch_loss(trainer) -> float:
    """The objective's loss on the trainer's whole (one-batch) dataset, without a gradient."""
    data = trainer.train_dataset
    batch = trainer.data_collator([data[i] for i in range(len(data))])
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def _backbone_calls(trainer) -> list[tuple[int, ...]]:
    """Record the input_ids shape of every forward through the model's transformer backbone."""
    calls: list[tuple[int, ...]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append(tuple(ids.shape))

    trainer.model.get_decoder().register_forward_pre_hook(hook, with_kwargs=True)
    return calls


@pytest.fixture(scope="module")
def tokenizer(micro_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model_dir)


@pytest.mark.parametrize("name", available_objectives())
def test_few_steps_lower_the_objective_loss_on_a_fixed_batch(micro_model_dir, tmp_path, tokenizer, name):
    """Five AdamW steps on the same batch lower every objective's loss on it (before vs after, losses may be < 0)."""
    spec = get_spec(name)
    if spec.data == "unpaired":  # one response per prompt with a label: desirable iff it scored best
        records = []
        for r in _records(BATCH, 2):
            best = max(range(2), key=lambda i: r["scores"][i])
            records.append({**r, "responses": [r["responses"][best]], "scores": [1.0], "labels": [True]})
            records.append({**r, "responses": [r["responses"][1 - best]], "scores": [0.0], "labels": [False]})
    else:
        records = _records(BATCH, 2 if spec.data == "pairwise" else 4)
    if "baseline_logps" in spec.inputs:  # PoFT: frozen aligned models' per-token log-probs of each response
        records = [{**r, "baseline_logps": [-1.0] * len(r["responses"])} for r in records]
    if "old_logps" in spec.inputs:  # online objectives: the samples' log-probs under the policy that drew them
        from transformers import AutoModelForCausalLM

        from prefrun.lm.logprobs import score_rows

        sampler = AutoModelForCausalLM.from_pretrained(micro_model_dir)
        old, _ = score_rows(sampler, list(_dataset(records, tokenizer)))
        records = [{**r, "old_logps": o} for r, o in zip(records, old)]
    trainer = _trainer(micro_model_dir, tmp_path, get_objective(name), _dataset(records, tokenizer))
    before = _batch_loss(trainer)
    trainer.train()
    after = _batch_loss(trainer)
    assert after < before, f"{name}: loss {before:.6g} -> {after:.6g}"


@pytest.mark.parametrize("shared_prompt", [False, True], ids=["list_collator", "shared_prompt"])
def test_one_training_step_is_one_policy_forward_over_all_responses(
    micro_model_dir, tmp_path, tokenizer, shared_prompt
):
    """B prompts × K responses: one step runs the backbone once, reading out B·K response log-probs.

    The ListCollator forward holds B·K rows (one per response); shared-prompt packing holds B rows.
    """
    k = 3
    trainer = _trainer(
        micro_model_dir,
        tmp_path,
        get_objective("lipo"),
        _dataset(_records(BATCH, k), tokenizer),
        steps=1,
        shared_prompt=shared_prompt,
    )
    calls = _backbone_calls(trainer)
    readouts: list[int] = []
    response_logps = trainer._response_logps

    def counting_response_logps(model, batch, reference=False):
        logps, lengths = response_logps(model, batch, reference)
        readouts.append(logps.shape[0])
        return logps, lengths

    trainer._response_logps = counting_response_logps
    policy_before = trainer.policy_forwards
    trainer.train()

    assert trainer.policy_forwards - policy_before == 1
    assert len(calls) == 1
    assert calls[0][0] == (BATCH if shared_prompt else BATCH * k)
    assert readouts == [BATCH * k]


def test_reference_logps_are_computed_once_and_reused_from_the_cache(micro_model_dir, tmp_path, tokenizer):
    """A second trainer on the same model, tokenizer and data loads bitwise-equal ref_logps from the cache."""
    dataset = _dataset(_records(BATCH, 2), tokenizer)

    def cache() -> ReferenceCache:
        return ReferenceCache(
            tmp_path / "cache",
            model_fingerprint(str(micro_model_dir)),
            tokenizer_fingerprint(tokenizer),
            "torch.float32",
        )

    first_cache, second_cache = cache(), cache()
    first = _trainer(micro_model_dir, tmp_path, get_objective("dpo"), dataset, ref_cache=first_cache)
    assert first.reference_forwards > 0
    assert (first_cache.hits, first_cache.misses) == (0, 1)

    second = _trainer(micro_model_dir, tmp_path, get_objective("dpo"), dataset, ref_cache=second_cache)
    assert second.reference_forwards == 0
    assert (second_cache.hits, second_cache.misses) == (1, 0)
    assert second.train_dataset["ref_logps"] == first.train_dataset["ref_logps"]


def test_training_never_recomputes_reference_logps(micro_model_dir, tmp_path, tokenizer):
    """Reference log-probs are precomputed at init; training steps add policy forwards only."""
    trainer = _trainer(
        micro_model_dir, tmp_path, get_objective("dpo"), _dataset(_records(BATCH, 2), tokenizer), steps=3
    )
    reference_forwards = trainer.reference_forwards
    assert reference_forwards > 0
    assert trainer.ref_model is None  # the reference's log-probs come from the initial policy: one model in memory
    trainer.train()
    assert trainer.reference_forwards == reference_forwards
    assert trainer.policy_forwards == 3


@pytest.mark.parametrize("name", REFERENCE_FREE)
def test_reference_free_objectives_never_run_a_reference_forward(micro_model_dir, tmp_path, tokenizer, name):
    """A reference-free objective gets no ref_logps column, never touches the cache, and trains without reference."""
    assert not get_spec(name).needs_reference
    k = 2 if get_spec(name).data == "pairwise" else 4
    cache = ReferenceCache(tmp_path / "cache", "model", "tokenizer", "torch.float32")
    trainer = _trainer(
        micro_model_dir,
        tmp_path,
        get_objective(name),
        _dataset(_records(BATCH, k), tokenizer),
        steps=1,
        ref_cache=cache,
    )
    assert "ref_logps" not in trainer.train_dataset.column_names
    assert trainer.ref_model is None  # no second model in memory
    trainer.train()
    assert trainer.reference_forwards == 0
    assert (cache.hits, cache.misses) == (0, 0)
    assert not (tmp_path / "cache").exists()


def test_lists_of_different_lengths_train_in_one_batch(micro_model_dir, tmp_path, tokenizer):
    """lipo on one batch holding lists of 2, 3 and 4 responses: padded entries are masked and the loss goes down."""
    records = [
        r | {"responses": r["responses"][:k], "scores": r["scores"][:k]} for r, k in zip(_records(3, 4), (2, 3, 4))
    ]
    trainer = _trainer(micro_model_dir, tmp_path, get_objective("lipo"), _dataset(records, tokenizer))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert batch["mask"].sum(dim=1).tolist() == [2, 3, 4]
    assert batch["input_ids"].shape[0] == 9
    before = _batch_loss(trainer)
    trainer.train()
    after = _batch_loss(trainer)
    assert torch.isfinite(torch.tensor(after))
    assert after < before


def _unpaired(records: list[dict]) -> list[dict]:
    """Each pair as two unpaired examples: the better response desirable, the worse undesirable."""
    out = []
    for r in records:
        best = max(range(2), key=lambda i: r["scores"][i])
        out.append({**r, "responses": [r["responses"][best]], "scores": [1.0], "labels": [True]})
        out.append({**r, "responses": [r["responses"][1 - best]], "scores": [0.0], "labels": [False]})
    return out


def test_bcos_running_reward_mean_is_restored_on_resume(micro_model_dir, tmp_path, tokenizer):
    """δ after a resume from step 2 continues the running mean: steps 3–4 log what an uninterrupted run logs."""
    from transformers import AutoModelForCausalLM

    dataset = _dataset(_unpaired(_records(8, 2)), tokenizer)

    def shifts(out: str, steps: int, resume: str | None = None) -> list[float]:
        args = cpu_dpo_config(tmp_path / out, BATCH, steps, 1e-3, save_strategy="steps", save_steps=2)
        trainer = ListTrainer(
            model=AutoModelForCausalLM.from_pretrained(micro_model_dir),
            objective=get_objective("bco", beta=1.0),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        return [h["reward_shift"] for h in trainer.state.log_history if "reward_shift" in h]

    full = shifts("full", 4)
    shifts("stopped", 2)
    resumed = shifts("stopped", 4, resume=str(tmp_path / "stopped" / "checkpoint-2"))
    assert len(full) == len(resumed) == 4  # the resumed history holds steps 1–2 from the checkpoint, 3–4 anew
    assert abs(full[2] - full[1]) > 1e-6  # δ moves, so a restart from 0 would show
    assert resumed == pytest.approx(full, abs=1e-6)


def test_the_reference_stage_says_whether_it_computed_or_loaded_its_logps(micro_model_dir, tmp_path, tokenizer, capsys):
    dataset = _dataset(_records(BATCH, 2), tokenizer)
    key = (model_fingerprint(str(micro_model_dir)), tokenizer_fingerprint(tokenizer), "torch.float32")
    _trainer(micro_model_dir, tmp_path, get_objective("dpo"), dataset, ref_cache=ReferenceCache(tmp_path / "c", *key))
    out = capsys.readouterr().out
    assert "reference log-probs: 8 computed, cached for the sweep" in out.splitlines()  # 4 lists of 2
    assert "[reference log-probs] done: batch 1/1" in out
    _trainer(micro_model_dir, tmp_path, get_objective("dpo"), dataset, ref_cache=ReferenceCache(tmp_path / "c", *key))
    assert capsys.readouterr().out == "reference log-probs: cached (8)\n"
