"""Shared fixtures: a very small tiny model (built once per session) and its tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

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


CONF = str(Path(__file__).resolve().parents[1] / "prefrun" / "conf")


def compose_cfg(tmp: Path, *overrides: str):
    """The config ``prefrun <overrides>`` composes, with outputs and caches under ``tmp``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp}/out", f"paths.cache_dir={tmp}/cache", *overrides])


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
    "eval.oracle.prompts=16",
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
    """A DPOConfig for fast, deterministic CPU tests (constant lr, fp32, no saving or reporting), built by the
    runs' own builder (prefrun.trainers.settings.dpo_config)."""
    from prefrun.trainers.settings import TrainSettings, dpo_config

    settings = TrainSettings(steps=steps, batch_size=batch, lr=lr, logging_steps=1)
    return dpo_config(settings, output_dir, "cpu", **{"report_to": [], **overrides})
