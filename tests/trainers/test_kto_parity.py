"""prefrun's KTO (ListTrainer + objective ``kto``) trains like TRL's KTOTrainer, step for step.

Both start from the same micro Llama, read the same unpaired examples in the same (sequential) order,
pair each example with the same mismatched completion for z₀ (rotated by one within each batch), take
the reference log-probs from the initial weights, and take the same AdamW steps. The losses, the raw
KL estimate (mean policy−reference log-ratio of the mismatched pairs, before TRL's clamp) and z₀ of every
step, and the weights after training, must agree.
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import cpu_dpo_config
from datasets import Dataset
from trl import KTOConfig, KTOTrainer

from prefrun.data.synthetic import SortTask, preference_records
from prefrun.data.tokenize import tokenize_record
from prefrun.objectives import get_objective
from prefrun.trainers.list_trainer import ListTrainer, with_mismatched_completion

N = 10  # batches of 4, 4 and 2: the last, short batch rotates within itself
BATCH = 4
STEPS = 3
LR = 1e-3
HP = {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 3.0}  # 8 desirable : 2 undesirable
TOL = 1e-5
# The training settings TRL's KTOConfig takes from our DPOConfig (cpu_dpo_config), so both run alike.
SHARED_ARGS = (
    "per_device_train_batch_size",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "use_cpu",
    "bf16",
    "report_to",
    "save_strategy",
    "seed",
    "data_seed",
    "disable_tqdm",
    "logging_steps",
    "remove_unused_columns",
    "max_length",
    "dataloader_num_workers",
    "train_sampling_strategy",
    "precompute_ref_log_probs",
)


def test_mismatched_completion_rotates_within_batches():
    """Record i of a chunk of ``batch_size`` gets the completion of record i−1, the first that of the last."""
    n = 10
    data = Dataset.from_list(
        [{"prompt_ids": [i], "response_ids": [[100 + i]], "scores": [1.0], "labels": [i % 2 == 0]} for i in range(n)]
    )
    out = with_mismatched_completion(data, 4)
    sources = [r[-1][0] - 100 for r in out["response_ids"]]
    assert sources == [3, 0, 1, 2, 7, 4, 5, 6, 9, 8]  # chunks [0..3], [4..7], [8, 9]
    assert [r[0][0] - 100 for r in out["response_ids"]] == list(range(n))  # the record's own completion kept
    assert all(s == [1.0, 0.0] for s in out["scores"])
    assert out["labels"] == [[i % 2 == 0, False] for i in range(n)]
    # A last chunk of one record pairs it with its own completion (as TRL's batched map does).
    nine = with_mismatched_completion(data.select(range(9)), 4)
    assert [r[-1][0] - 100 for r in nine["response_ids"]] == [3, 0, 1, 2, 7, 4, 5, 6, 8]


def _examples() -> list[dict]:
    """N unpaired sort examples (prompt, completion, label): desirable iff the answer is well formed.

    Mostly desirable (8 of 10), so training raises the log-probs of sort answers in general, the mismatched
    ones included: the KL estimate turns positive and z₀ (clamped at 0) enters the loss.
    """
    records = preference_records(SortTask(), N, k=2, max_swaps=4, corrupt_prob=0.3, seed=11)
    examples = [
        {"prompt": r["prompt"], "completion": r["responses"][j], "label": r["scores"][j] > 0}
        for r in records
        for j in range(2)
    ]
    random.Random(5).shuffle(examples)
    examples = examples[:N]
    assert 0 < sum(e["label"] for e in examples) < N
    return examples


class Recorder:
    """Per training step: the loss compute_loss returned, the raw KL estimate and the z₀ the trainer logged."""

    def __init__(self):
        self.loss: list[float] = []
        self.kl_raw: list[float] = []
        self.z0: list[float] = []

    def wrap_loss(self, trainer):
        compute_loss = trainer.compute_loss

        def recording(model, inputs, *args, **kwargs):
            out = compute_loss(model, inputs, *args, **kwargs)
            self.loss.append(out.item())
            self.z0.append(trainer._metrics["train"]["kl"][-1])
            return out

        trainer.compute_loss = recording


def _trl(model_dir, tokenizer, examples, args) -> tuple[KTOTrainer, Recorder]:
    from transformers import AutoModelForCausalLM

    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
    )
    rec = Recorder()
    rec.wrap_loss(trainer)
    kl_logps = trainer._compute_kl_logps

    def recording(model, batch):
        out = kl_logps(model, batch)
        rec.kl_raw.append((out - batch["ref_KL_logps"]).mean().item())
        return out

    trainer._compute_kl_logps = recording
    return trainer, rec


def _ours(model_dir, tokenizer, examples, args) -> tuple[ListTrainer, Recorder]:
    from transformers import AutoModelForCausalLM

    rows = [
        {
            **tokenize_record({"prompt": e["prompt"], "responses": [e["completion"]]}, tokenizer, 128, 128),
            "scores": [float(e["label"])],
            "labels": [e["label"]],
        }
        for e in examples
    ]
    trainer = ListTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        objective=get_objective("kto", **HP),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    rec = Recorder()
    rec.wrap_loss(trainer)
    split = trainer._split_kl_slot

    def recording(model, inputs):
        main, kl_logratios = split(model, inputs)
        rec.kl_raw.append(kl_logratios.mean().item())
        return main, kl_logratios

    trainer._split_kl_slot = recording
    return trainer, rec


def test_kto_trains_like_trl_kto_trainer(micro_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    examples = _examples()
    our_args = cpu_dpo_config(
        tmp_path / "ours", BATCH, STEPS, LR, train_sampling_strategy="sequential", precompute_ref_log_probs=True
    )
    trl_args = KTOConfig(
        output_dir=str(tmp_path / "trl"),
        loss_type="kto",
        **HP,
        **{name: getattr(our_args, name) for name in SHARED_ARGS},
    )
    trl, trl_rec = _trl(micro_model_dir, tokenizer, examples, trl_args)
    ours, our_rec = _ours(micro_model_dir, tokenizer, examples, our_args)

    # Same tokens (TRL's tokenization with its EOS vs prefrun's record tokenizer), same mismatched completions.
    theirs_data, our_data = trl.train_dataset, ours.train_dataset
    assert theirs_data["prompt_ids"] == our_data["prompt_ids"]
    assert theirs_data["completion_ids"] == [r[0] for r in our_data["response_ids"]]
    assert all(ids[-1] == tokenizer.eos_token_id for ids in theirs_data["completion_ids"])
    assert theirs_data["KL_completion_ids"] == [r[1] for r in our_data["response_ids"]]
    # Same reference log-probs (both from the initial weights) for the completions and the mismatched ones.
    ref = torch.tensor(our_data["ref_logps"])
    assert torch.allclose(ref[:, 0], torch.tensor(theirs_data["ref_logps"]), atol=TOL, rtol=0)
    assert torch.allclose(ref[:, 1], torch.tensor(theirs_data["ref_KL_logps"]), atol=TOL, rtol=0)

    trl.train()
    ours.train()

    assert len(our_rec.loss) == len(trl_rec.loss) == STEPS
    loss_diff = [abs(a - b) for a, b in zip(our_rec.loss, trl_rec.loss)]
    kl_diff = [abs(a - b) for a, b in zip(our_rec.kl_raw, trl_rec.kl_raw)]
    z0_diff = [abs(a - b) for a, b in zip(our_rec.z0, trl_rec.z0)]
    weight_diff = max(
        (a - b).abs().max().item() for a, b in zip(ours.model.parameters(), trl.model.parameters(), strict=True)
    )
    print(
        f"KTO parity: losses ours {our_rec.loss} TRL {trl_rec.loss}; max |loss diff| per step {loss_diff}; "
        f"raw KL ours {our_rec.kl_raw} TRL {trl_rec.kl_raw} (|diff| {kl_diff}); z0 |diff| {z0_diff}; "
        f"max |weight diff| {weight_diff:.1e}"
    )
    assert max(loss_diff) <= TOL
    assert max(kl_diff) <= TOL
    assert max(z0_diff) <= TOL
    assert weight_diff <= TOL

    # The comparison is not vacuous: at step 1 the policy is the reference (ρ = 0, KL 0, the loss is the
    # weighted mean of 1/2); afterwards it has moved, so the log-ratios and hence the losses depend on it.
    first = examples[:BATCH]
    weights = [HP["desirable_weight"] if e["label"] else HP["undesirable_weight"] for e in first]
    assert our_rec.loss[0] == pytest.approx(0.5 * sum(weights) / BATCH, abs=1e-6)
    assert abs(our_rec.kl_raw[0]) < 1e-5
    assert min(abs(k) for k in our_rec.kl_raw[1:]) > 100 * TOL
    assert max(our_rec.z0) > 100 * TOL  # z₀ above its clamp: the loss depends on the mismatched pairs


def test_kto_refuses_a_per_device_batch_of_one(micro_model_dir, tmp_path):
    """As TRL's KTOTrainer: a batch of one would pair each example with its own completion (z₀ = its own ρ)."""
    from transformers import AutoTokenizer

    with pytest.raises(ValueError, match="batch size > 1"):
        _ours(
            micro_model_dir,
            AutoTokenizer.from_pretrained(micro_model_dir),
            _examples(),
            cpu_dpo_config(tmp_path, 1, 1, LR),
        )
