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
