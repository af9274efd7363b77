"""Tokenising records: prompt ids once per record, then each response's ids, EOS included.

With a chat prompt (a message list) the tokenizer's chat template renders prompt + assistant turn
together and the response starts where the two token sequences diverge, so BPE merges at the join
cannot corrupt the completion mask. EOS is part of the scored response, as TRL appends it.
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


def _tokenize(prompt: Any, texts: list[str], tokenizer: Any) -> tuple[list[int], list[list[int]]]:
    """The prompt's ids and each response's ids (EOS included) cut where prompt and prompt + response diverge."""
    eos = [tokenizer.eos_token_id]
    if isinstance(prompt, list):
        prompt_ids = _ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
        responses = []
        for text in texts:
            full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": text}], tokenize=True)
            full = _ids(full)
            ids = list(full[_common_prefix(prompt_ids, full) :])
            if not ids or ids[-1] != tokenizer.eos_token_id:
                ids += eos
            responses.append(ids)
        return prompt_ids, responses
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    responses = []
    for text in texts:
        full = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
        responses.append(list(full[_common_prefix(prompt_ids, full) :]) + eos)
    return list(prompt_ids), responses


def tokenize_record(
    record: Record, tokenizer: Any, max_prompt_len: int, max_response_len: int, joint: bool = False
) -> dict:
    """{"prompt_ids": [...], "response_ids": [[...] × K]} with the prompt kept at its end, responses at their start.

    A record with per-response ``prompts`` (joint preferences) also gets ``response_prompt_ids``, each
    response's own prompt. ``joint``: the prompt tokens will be scored too (DOVE), so each prompt starts
    with BOS: the first token of a sequence has no context and is never scored, as in DOVE's code.
    """

    def cut(prompt_ids: list[int]) -> list[int]:
        prompt_ids = prompt_ids[-max_prompt_len:]
        bos = tokenizer.bos_token_id
        if joint and bos is not None and prompt_ids[:1] != [bos]:
            prompt_ids = [bos, *prompt_ids]
        return prompt_ids

    if "prompts" in record:  # each distinct prompt is rendered once, with all of its responses
        groups: dict[str, list[int]] = {}
        for k, prompt in enumerate(record["prompts"]):
            groups.setdefault(repr(prompt), []).append(k)
        prompts: list[list[int]] = [[] for _ in record["responses"]]
        responses: list[list[int]] = [[] for _ in record["responses"]]
        for ks in groups.values():
            prompt_ids, ids = _tokenize(record["prompts"][ks[0]], [record["responses"][k] for k in ks], tokenizer)
            for k, response in zip(ks, ids):
                prompts[k], responses[k] = cut(prompt_ids), response[:max_response_len]
        return {"prompt_ids": prompts[0], "response_ids": responses, "response_prompt_ids": prompts}
    prompt_ids, responses = _tokenize(record["prompt"], record["responses"], tokenizer)
    return {"prompt_ids": cut(prompt_ids), "response_ids": [r[:max_response_len] for r in responses]}
