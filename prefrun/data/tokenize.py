"""Tokenising records: prompt ids once per record, then each response's ids, EOS included.

With a chat prompt (a message list) the tokenizer's chat template renders prompt + assistant turn
together and the response starts where the two token sequences diverge, so BPE merges at the join
cannot corrupt the completion mask (../shared/OBJECTIVES.md section 0, rule 5).
"""

from __future__ import annotations

from typing import Any

from prefrun.data.records import Record


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _ids(encoded: Any) -> list[int]:
    """Token ids from apply_chat_template, which returns a list or a BatchEncoding by version."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def tokenize_record(record: Record, tokenizer: Any, max_prompt_len: int, max_response_len: int) -> dict:
    """{"prompt_ids": [...], "response_ids": [[...] × K]} with the prompt kept at its end, responses at their start."""
    prompt = record["prompt"]
    eos = [tokenizer.eos_token_id]
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        prompt_ids = _ids(prompt_ids)
        responses = []
        for text in record["responses"]:
            full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": text}], tokenize=True)
            full = _ids(full)
            cut = _common_prefix(prompt_ids, full)
            ids = list(full[cut:])
            if not ids or ids[-1] != tokenizer.eos_token_id:
                ids += eos
            responses.append(ids)
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        responses = []
        for text in record["responses"]:
            full = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
            cut = _common_prefix(prompt_ids, full)
            responses.append(list(full[cut:]) + eos)
    prompt_ids = list(prompt_ids)[-max_prompt_len:]
    return {"prompt_ids": prompt_ids, "response_ids": [r[:max_response_len] for r in responses]}
