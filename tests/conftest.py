"""Shared fixtures: a very small tiny model (built once per session) and its tokenizer."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MICRO = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "max_position_embeddings": 256,
    "init_seed": 0,
}


# CLI overrides of a fast run on a micro model (2-layer, 32-wide), shared by the multi-process and resume tests.
# lr 1e-3 is large enough that the loss curve moves: a flat curve would match trivially.
MICRO_RUN = [
    "logger=none",
    "train.batch_size=8",
    "train.lr=1e-3",
    "train.logging_steps=1",
    "sft.steps=20",
    "dataset.train_prompts=64",
    "dataset.sft_records=256",
    "eval.prompts=16",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_heads=2",
]


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory):
    """A 2-layer, 32-wide Llama with the sort task's tokenizer, for fast trainer tests."""
    from prefrun.data.synthetic import SortTask
    from prefrun.models.tiny import tiny_model_dir

    return tiny_model_dir(MICRO, SortTask().words(), tmp_path_factory.mktemp("models"))


@pytest.fixture()
def micro_model(micro_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(micro_model_dir), AutoTokenizer.from_pretrained(micro_model_dir)


def cpu_dpo_config(output_dir, batch: int, steps: int, lr: float, **overrides):
    """A DPOConfig for fast, deterministic CPU tests: constant lr, fp32, no saving or reporting."""
    from trl import DPOConfig

    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="constant",
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        logging_steps=1,
        remove_unused_columns=False,
        max_length=None,
        dataloader_num_workers=0,
    )
    return DPOConfig(**{**settings, **overrides})
