"""Shared-prompt packing gives the unshared path's log-probs (fp32, 1e-4) and gradients, in fewer tokens."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from trl.trainer.utils import add_fused_lm_head

from prefrun.data.collator import ListCollator
from prefrun.data.shared_prompt import (
    SharedPromptCollator,
    tokens_per_record,
    use_shared_prompt,
)
from prefrun.lm.logprobs import response_logps


def _records(vocab: int, seed: int = 0) -> list[dict]:
    """Variable K (1..4), prompt lengths (0..12) and response lengths (1..7), random token ids."""
    rng = random.Random(seed)
    shapes = [(12, [3, 7, 1, 5]), (1, [2, 2]), (5, [6]), (0, [4, 1, 3]), (9, [1, 7, 2])]
    out = []
    for p_len, r_lens in shapes:
        out.append(
            {
                "prompt_ids": [rng.randrange(4, vocab) for _ in range(p_len)],
                "response_ids": [[rng.randrange(4, vocab) for _ in range(n)] for n in r_lens],
                "scores": [rng.random() for _ in r_lens],
            }
        )
    return out


def _unshared_logps(model, batch):
    """The reference computation: ListCollator rows, a plain forward, log_softmax over full logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tokens = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:]
    return (tokens * mask).sum(1), mask.sum(1)


@pytest.fixture()
def fused_model(micro_model):
    model, tokenizer = micro_model
    assert model.config._attn_implementation == "sdpa"
    add_fused_lm_head(model)  # as DPOTrainer/ListTrainer do; plain forwards stay unchanged
    return model.float(), tokenizer


def test_logps_equal_unshared(fused_model):
    model, tokenizer = fused_model
    records = _records(len(tokenizer))
    plain = ListCollator(pad_token_id=tokenizer.pad_token_id)(records)
    shared = SharedPromptCollator(pad_token_id=tokenizer.pad_token_id)(records)
    assert torch.equal(plain["list_index"], shared["list_index"])
    assert torch.equal(plain["mask"], shared["mask"]) and torch.equal(plain["scores"], shared["scores"])
    with torch.no_grad():
        want, want_len = _unshared_logps(model, plain)
        got, got_len = response_logps(model, shared)
    assert torch.equal(got_len, want_len)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # ... and fewer tokens through the model
    assert shared["padding_mask"].sum() < plain["attention_mask"].sum()


def test_each_record_alone_equals_batched(fused_model):
    """Padding (rows of different widths) changes nothing."""
    model, tokenizer = fused_model
    records = _records(len(tokenizer), seed=1)
    collate = SharedPromptCollator(pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        batched, _ = response_logps(model, collate(records))
        alone = torch.cat([response_logps(model, collate([r]))[0] for r in records])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_gradients_flow_and_match(fused_model):
    model, tokenizer = fused_model
    records = _records(len(tokenizer), seed=2)
    weights = torch.linspace(-1.0, 1.0, sum(len(r["response_ids"]) for r in records))

    def grads(fn, collate):
        model.zero_grad()
        logps, _ = fn(model, collate(records))
        (logps * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    want = grads(_unshared_logps, ListCollator(pad_token_id=tokenizer.pad_token_id))
    got = grads(response_logps, SharedPromptCollator(pad_token_id=tokenizer.pad_token_id))
    assert set(got) == set(want) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name in want:
        assert got[name].abs().sum() > 0, name
        torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-3, msg=name)


def test_mask_isolates_responses():
    batch = SharedPromptCollator(pad_token_id=0)(
        [{"prompt_ids": [5, 6], "response_ids": [[7, 8], [9]]}, {"prompt_ids": [5], "response_ids": [[7]]}]
    )
    allowed = (batch["attention_mask"][:, 0] == 0).int()
    assert batch["attention_mask"].shape == (2, 1, 6, 6) and batch["attention_mask"].dtype == torch.float32
    # row 0: [5 | 6 7 8 | 6 9]; the second response (indices 4, 5) never sees the first (1, 2, 3)
    assert allowed[0, 4].tolist() == [1, 0, 0, 0, 1, 0]
    assert allowed[0, 5].tolist() == [1, 0, 0, 0, 1, 1]
    assert allowed[0, 3].tolist() == [1, 1, 1, 1, 0, 0]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 1, 2]
    assert batch["shift_labels"][0].tolist() == [-100, 7, 8, -100, 9, -100]
    # row 1 is padded after 2 tokens; padding sees only itself (no fully masked row)
    assert allowed[1].sum(1).tolist() == [1, 2, 1, 1, 1, 1]
    assert batch["padding_mask"].sum().item() == 8


def test_tokens_and_auto_switch():
    assert tokens_per_record(256, [32] * 8) == (8 * 288, 255 + 8 * 33)
    long_prompts = Dataset.from_list([{"prompt_ids": [1] * 64, "response_ids": [[2] * 8] * 4}] * 3)
    short_prompts = Dataset.from_list([{"prompt_ids": [1] * 4, "response_ids": [[2] * 32] * 2}] * 3)
    assert use_shared_prompt("auto", long_prompts) and not use_shared_prompt("auto", short_prompts)
    assert use_shared_prompt("on", short_prompts) and not use_shared_prompt("off", long_prompts)
    with pytest.raises(ValueError):
        use_shared_prompt("sometimes", long_prompts)


def test_through_peft_wrapper(micro_model):
    """The forward goes through a PEFT wrapper (position_ids, shift_labels and the 4-D mask pass through)."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = micro_model
    add_fused_lm_head(model)  # before PEFT, as TRL does
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # a non-trivial adapter
    records, pad = _records(len(tokenizer), seed=3), tokenizer.pad_token_id
    with torch.no_grad():
        want, _ = _unshared_logps(model, ListCollator(pad_token_id=pad)(records))
        got, _ = response_logps(model, SharedPromptCollator(pad_token_id=pad)(records))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["kto", "jpo"])
def test_objectives_that_need_a_row_per_response_are_never_packed(name):
    from prefrun.objectives import get_spec

    long_prompts = Dataset.from_list([{"prompt_ids": [1] * 64, "response_ids": [[2] * 8] * 4}] * 3)
    assert use_shared_prompt("auto", long_prompts) and not use_shared_prompt("auto", long_prompts, get_spec(name))
    with pytest.raises(ValueError, match=f"cannot pack: objective {name} "):
        use_shared_prompt("on", long_prompts, get_spec(name))


def test_per_response_prompts_are_never_packed():
    joint = Dataset.from_list(
        [{"prompt_ids": [1] * 64, "response_ids": [[2] * 8] * 2, "response_prompt_ids": [[1] * 64, [3] * 64]}] * 3
    )
    assert not use_shared_prompt("auto", joint)
    with pytest.raises(ValueError, match="each response its own prompt"):
        use_shared_prompt("on", joint)
