"""prefrun's list trainer gives TRL DPOTrainer's loss on the same model and batch: at init and after steps.

For every objective whose loss TRL 1.16 has natively (same loss_type and beta), both trainers start
from the same weights, see the same pairs in the same order, and take the same AdamW steps.
"""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_dpo_config
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from prefrun.data.synthetic import SortTask, preference_records
from prefrun.data.tokenize import tokenize_record
from prefrun.objectives import get_objective
from prefrun.trainers.list_trainer import ListTrainer

# prefrun objective (with hyperparameters) -> TRL loss_type (with the same hyperparameters)
CASES = [
    ("dpo", {"beta": 0.1}, {"loss_type": ["sigmoid"], "beta": 0.1}),
    ("ipo", {"beta": 0.1}, {"loss_type": ["ipo"], "beta": 0.1}),
    ("hinge", {"beta": 0.1}, {"loss_type": ["hinge"], "beta": 0.1}),
    (
        "robust",
        {"beta": 0.1, "label_smoothing": 0.2},
        {"loss_type": ["robust"], "beta": 0.1, "label_smoothing": 0.2},
    ),
    ("nca_pair", {"beta": 0.1}, {"loss_type": ["nca_pair"], "beta": 0.1}),
    (
        "exo_pair",
        {"beta": 0.1, "label_smoothing": 1e-3},
        {"loss_type": ["exo_pair"], "beta": 0.1, "label_smoothing": 1e-3},
    ),
    ("apo_zero", {"beta": 0.1}, {"loss_type": ["apo_zero"], "beta": 0.1}),
    ("apo_down", {"beta": 0.1}, {"loss_type": ["apo_down"], "beta": 0.1}),
    (
        "discopop",
        {"beta": 0.05, "tau": 0.05},
        {"loss_type": ["discopop"], "beta": 0.05, "discopop_tau": 0.05},
    ),
    ("sppo_hard", {"beta": 0.1}, {"loss_type": ["sppo_hard"], "beta": 0.1}),
    ("ln_dpo", {"beta": 1.0}, {"loss_type": ["sigmoid_norm"], "beta": 1.0}),
    ("aot", {"beta": 0.1, "label_smoothing": 0.0}, {"loss_type": ["aot"], "beta": 0.1}),
    ("cdpo", {"beta": 0.1, "label_smoothing": 0.0}, {"loss_type": ["sigmoid"], "beta": 0.1}),
]
BATCH = 8
STEPS = 3


def _pairs(n: int) -> list[dict]:
    records = preference_records(SortTask(), n, k=2, max_swaps=6, corrupt_prob=0.3, seed=7)
    out = []
    for r in records:
        if r["scores"][0] == r["scores"][1]:
            continue
        order = sorted(range(2), key=lambda i: -r["scores"][i])
        out.append({"prompt": r["prompt"], "responses": [r["responses"][i] for i in order], "scores": [1.0, 0.0]})
    return out[:n]


def _args(tmp_path, name, **kw) -> DPOConfig:
    return cpu_dpo_config(tmp_path / name, BATCH, STEPS, 1e-3, precompute_ref_log_probs=True, **kw)


def _trl_batch_loss(trainer, dataset) -> float:
    batch = trainer.data_collator([dataset[i] for i in range(BATCH)])
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_loss_equals_trl_at_init_and_after_steps(micro_model_dir, tmp_path, name, ours, theirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    pairs = _pairs(4 * BATCH)
    trl_data = Dataset.from_list(
        [{"prompt": p["prompt"], "chosen": p["responses"][0], "rejected": p["responses"][1]} for p in pairs]
    )
    trl = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(micro_model_dir),
        args=_args(tmp_path, "trl", **theirs),
        train_dataset=trl_data,
        processing_class=tokenizer,
    )
    rows = [{**tokenize_record(p, tokenizer, 128, 128), "scores": p["scores"]} for p in pairs]
    ours_trainer = ListTrainer(
        model=AutoModelForCausalLM.from_pretrained(micro_model_dir),
        objective=get_objective(name, **ours),
        args=_args(tmp_path, "ours"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )

    # Same token ids on both sides (TRL's tokenisation vs the record tokenizer).
    assert trl.train_dataset[0]["chosen_ids"] == ours_trainer.train_dataset[0]["response_ids"][0]

    def our_loss() -> float:
        batch = ours_trainer.data_collator([ours_trainer.train_dataset[i] for i in range(BATCH)])
        with torch.no_grad():
            return ours_trainer.compute_loss(ours_trainer.model, batch).item()

    init_ours, init_trl = our_loss(), _trl_batch_loss(trl, trl.train_dataset)
    assert init_ours == pytest.approx(init_trl, rel=1e-6, abs=1e-5)  # fp32: sppo_hard's loss is ~50
    trl.train()
    ours_trainer.train()
    after_ours, after_trl = our_loss(), _trl_batch_loss(trl, trl.train_dataset)
    assert after_ours == pytest.approx(after_trl, rel=1e-6, abs=1e-5)
    print(
        f"parity {name}: init {init_ours:.6f} vs TRL {init_trl:.6f} (|diff| {abs(init_ours - init_trl):.1e}); "
        f"after {STEPS} steps {after_ours:.6f} vs {after_trl:.6f} (|diff| {abs(after_ours - after_trl):.1e})"
    )
