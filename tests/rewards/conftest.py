"""Fixtures of the reward-source tests: sort-task lists, a micro reward model, the preference-matrix check."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def sort_lists():
    """12 sort prompts with 4 responses each, of graded quality (some malformed), and their oracle rewards."""
    from prefrun.data.synthetic import SortTask, preference_records

    records = preference_records(SortTask(), n=12, k=4, max_swaps=4, corrupt_prob=0.2, seed=3)
    return [r["prompt"] for r in records], [r["responses"] for r in records]


def assert_preference_matrix(p: torch.Tensor, b: int, k: int) -> None:
    """The protocol's invariants: [B, K, K] float32, P + Pᵀ = 1, diagonal ½, entries in [0, 1]."""
    assert p.shape == (b, k, k) and p.dtype == torch.float32
    assert torch.allclose(p + p.transpose(-1, -2), torch.ones_like(p), atol=1e-6)
    assert torch.all(p.diagonal(dim1=-2, dim2=-1) == 0.5)
    assert bool(((p >= 0) & (p <= 1)).all())


@pytest.fixture()
def check_preferences():
    return assert_preference_matrix


@pytest.fixture(scope="session")
def micro_reward_model_dir(micro_model_dir, tmp_path_factory):
    """A LlamaForSequenceClassification (num_labels = 1) on the micro model's config and tokenizer, random
    init, saved with its tokenizer set to pad on the left (the source must not depend on it)."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(micro_model_dir)
    config.num_labels = 1
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # a visible score head: the default init (std 0.02) gives logits close to each other
        model.score.weight.normal_(0, 1.0)
    out = tmp_path_factory.mktemp("rm")
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def micro_gpt2_reward_model_dir(micro_model_dir, tmp_path_factory):
    """A GPT-2 reward model (absolute position embeddings: padding on the wrong side would shift them)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("pad", "bos", "eos")}
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256, num_labels=1, **ids)
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)
        model.transformer.wpe.weight.normal_(0, 1.0)  # positions matter visibly
    out = tmp_path_factory.mktemp("rm_gpt2")
    model.save_pretrained(out)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out)
    return out
