"""Tokenising records: prompt ids once per record, then each response's ids, EOS included.

With a chat prompt (a message list) the tokenizer's chat template renders prompt + assistant turn
together and the response starts where the two token sequences diverge, so BPE merges at the join
cannot corrupt the completion mask. EOS is part of the scored response, as TRL appends it.
"""

from __future__ import annotations

from typing import Any

from prefrun.data.records import Record

# Texts past this many characters are clipped before tokenizing (a prompt keeps its end, a response its
# start): a fast tokenizer holds ~150 bytes per character of a text while it encodes it (one 10 MB response
# took 2.9 GB), and no max length keeps more than a small part of such a text. 200,000 characters are
# many times any max_prompt_len / max_response_len in tokens (a token is rarely 20 characters long), so every
# kept token is the one the whole text gives.
LONG_TEXT_CHARS = 200_000


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
        prompt = [
            {**m, "content": m["content"][-LONG_TEXT_CHARS:]} if isinstance(m.get("content"), str) else m
            for m in prompt
        ]
        texts = [t[:LONG_TEXT_CHARS] for t in texts]
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
    prompt = prompt[-LONG_TEXT_CHARS:]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    responses = []
    for text in (t[:LONG_TEXT_CHARS] for t in texts):
        full = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
        responses.append(list(full[_common_prefix(prompt_ids, full) :]) + eos)
    return list(prompt_ids), responses


def tokenize_full(record: Record, tokenizer: Any) -> dict:
    """The record's ids before any truncation: {"prompt_ids", "response_ids": [[...] × K]}.

    Only texts past LONG_TEXT_CHARS are clipped first (their counts of cut tokens are then lower bounds).

    A record with per-response ``prompts`` (joint preferences) also gets ``response_prompt_ids``, each
    response's own prompt, and ``prompt_ids`` is the first response's.
    """
    if "prompts" in record:  # each distinct prompt is rendered once, with all of its responses
        groups: dict[str, list[int]] = {}
        for k, prompt in enumerate(record["prompts"]):
            groups.setdefault(repr(prompt), []).append(k)
        prompts: list[list[int]] = [[] for _ in record["responses"]]
        responses: list[list[int]] = [[] for _ in record["responses"]]
        for ks in groups.values():
            prompt_ids, ids = _tokenize(record["prompts"][ks[0]], [record["responses"][k] for k in ks], tokenizer)
            for k, response in zip(ks, ids):
                prompts[k], responses[k] = prompt_ids, response
        return {"prompt_ids": prompts[0], "response_ids": responses, "response_prompt_ids": prompts}
    prompt_ids, responses = _tokenize(record["prompt"], record["responses"], tokenizer)
    return {"prompt_ids": prompt_ids, "response_ids": responses}


def truncate(row: dict, max_prompt_len: int, max_response_len: int, bos: int | None = None) -> dict:
    """A ``tokenize_full`` row cut to the lengths: prompts keep their end, responses their start.

    ``bos``: prepended to each prompt that does not already start with it (joint log-probs, see tokenize_record).
    """

    def cut(prompt_ids: list[int]) -> list[int]:
        prompt_ids = list(prompt_ids[-max_prompt_len:])
        if bos is not None and prompt_ids[:1] != [bos]:
            prompt_ids = [bos, *prompt_ids]
        return prompt_ids

    out = {"prompt_ids": cut(row["prompt_ids"]), "response_ids": [r[:max_response_len] for r in row["response_ids"]]}
    if "response_prompt_ids" in row:
        out["response_prompt_ids"] = [cut(p) for p in row["response_prompt_ids"]]
    return out


def tokenize_record(
    record: Record, tokenizer: Any, max_prompt_len: int, max_response_len: int, joint: bool = False
) -> dict:
    """{"prompt_ids": [...], "response_ids": [[...] × K]} with the prompt kept at its end, responses at their start.

    A record with per-response ``prompts`` (joint preferences) also gets ``response_prompt_ids``, each
    response's own prompt. ``joint``: the prompt tokens will be scored too (DOVE), so each prompt starts
    with BOS: the first token of a sequence has no context and is never scored, as in DOVE's code.
    """
    bos = tokenizer.bos_token_id if joint else None
    return truncate(tokenize_full(record, tokenizer), max_prompt_len, max_response_len, bos=bos)
