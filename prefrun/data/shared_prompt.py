"""Shared-prompt packing: each record's prompt is encoded once, followed by its K responses, in one row.

The unshared path (``ListCollator``) runs the prompt K times, once per response row. Here a record of
prompt ``p`` (length P) and responses ``r_1 .. r_K`` becomes one row

    p[0 .. P-2] | p[P-1] r_1 | p[P-1] r_2 | ... | p[P-1] r_K | pad

with a 4-D additive attention mask [B, 1, T, T] (0 = attend, dtype-min = blocked): the prompt is
causal, and every response segment attends to the prompt and causally to its own earlier tokens
only, never to another response. Position ids restart after the prompt for every segment, so
response token t sits at position P + t, exactly as in its unshared row.

The last prompt token predicts the first token of *every* response, so its hidden state is needed K
times with K different labels. Each segment therefore starts with a copy of the last prompt token at
position P - 1: the copy attends to p[0 .. P-2] and itself, i.e. it sees what the original last token
sees in the unshared row, so its hidden state is the same, and within the segment every position
predicts exactly one label. That keeps the readout one label per position (TRL's fused LM head with
pre-shifted ``shift_labels``: no [B, T, V] logits, no extra forward), at K - 1 extra tokens per row.

    >>> collate = SharedPromptCollator(pad_token_id=0)
    >>> batch = collate([{"prompt_ids": [1, 2, 3], "response_ids": [[4], [5, 6]], "scores": [1.0, 0.0]}])
    >>> batch["input_ids"].tolist()        # prompt core, then (last prompt token, response) per response
    [[1, 2, 3, 4, 3, 5, 6]]
    >>> batch["position_ids"].tolist()     # positions restart after the prompt
    [[0, 1, 2, 3, 2, 3, 4]]
    >>> batch["shift_labels"].tolist()     # the token each position predicts (-100: none)
    [[-100, -100, 4, -100, 5, 6, -100]]
    >>> batch["label_owner"].tolist()      # which response (row of ListCollator's order) it belongs to
    [[-1, -1, 0, -1, 1, 1, -1]]
    >>> (batch["attention_mask"][0, 0] == 0).int().tolist()[5]   # sees p[0..1], its copy of p[2], itself
    [1, 1, 0, 0, 1, 1, 0]

``prefrun.lm.logprobs.response_logps(model, batch)`` returns the summed log-probs [N] and token counts
[N] of the N = ΣK responses in ListCollator's row order (``list_index``), as for an unshared batch.
The other batch fields (``list_index``, ``mask``, ``scores``, ``ref_logps``, ...) are those of ``ListCollator``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefrun.data.collator import list_fields
from prefrun.errors import PrefrunError

IGNORE = -100


def _pack(prompt: list[int], responses: list[list[int]], first_row: int):
    """One record's row: ids, positions, shifted labels, owners, and the segment id of each token.

    Segment 0 is the prompt core p[0 .. P-2]; segment j ≥ 1 is (p[P-1], r_j).
    """
    ctx = prompt[-1:]  # the last prompt token, repeated at the head of every response segment
    core = prompt[: len(prompt) - len(ctx)]
    ids, pos, segment = list(core), list(range(len(core))), [0] * len(core)
    labels, owner = [IGNORE] * len(core), [-1] * len(core)
    for j, resp in enumerate(responses):
        seg = ctx + list(resp)
        ids += seg
        pos += range(len(core), len(core) + len(seg))
        # position i of the segment predicts seg[i + 1]; only response tokens are scored
        scored = [len(ctx) <= i + 1 < len(seg) for i in range(len(seg))]
        labels += [seg[i + 1] if s else IGNORE for i, s in enumerate(scored)]
        owner += [first_row + j if s else -1 for s in scored]
        segment += [j + 1] * len(seg)
    return ids, pos, labels, owner, segment


def shared_attention_mask(segments: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype = torch.float32):
    """Additive [B, 1, T, T] mask from segment ids [B, T] (0 = prompt) and a padding mask [B, T].

    Query i may see key j ≤ i when j is in the prompt or in i's own segment. A padding query sees only
    itself, so no row is fully blocked (no NaN from softmax over nothing).
    """
    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]
    to_prompt = (segments == 0)[:, None, :] & valid[:, None, :]
    allowed = causal & (same | to_prompt) & valid[:, :, None] & valid[:, None, :]
    allowed |= torch.eye(t, dtype=torch.bool, device=segments.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@dataclass
class SharedPromptCollator:
    """B records → B packed rows (see module doc) plus ListCollator's list fields."""

    pad_token_id: int
    mask_dtype: torch.dtype = torch.float32

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        packed, index = [], []
        for b, ex in enumerate(examples):
            packed.append(_pack(list(ex["prompt_ids"]), list(ex["response_ids"]), len(index)))
            index += [(b, k) for k in range(len(ex["response_ids"]))]
        width = max(len(p[0]) for p in packed)

        def pad(i: int, value: int) -> torch.Tensor:
            return torch.tensor([p[i] + [value] * (width - len(p[i])) for p in packed])

        segments = pad(4, -1)
        valid = torch.tensor([[1] * len(p[0]) + [0] * (width - len(p[0])) for p in packed])
        labels = pad(2, IGNORE)
        out: dict[str, torch.Tensor] = {
            "input_ids": pad(0, self.pad_token_id),
            "attention_mask": shared_attention_mask(segments, valid.bool(), self.mask_dtype),
            "position_ids": pad(1, 0),
            "shift_labels": labels,
            "label_owner": pad(3, -1),
            "completion_mask": (labels != IGNORE).long(),  # 1 where a response token is predicted
            "padding_mask": valid,  # real tokens through the model
            # the data's tokens as every trainer counts them (prompt + response per response), so
            # tokens/s compares with the unshared path and with TRL
            "data_tokens": torch.tensor(
                sum(
                    len(ex["prompt_ids"]) * len(ex["response_ids"]) + sum(map(len, ex["response_ids"]))
                    for ex in examples
                )
            ),
        }
        out.update(list_fields(examples, index))
        return out


def shared_prompt_inputs(batch: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Keyword arguments for ``model(**kwargs, fused_lm_head=True)`` (TRL's fused head, pre-shifted labels).

    The 4-D mask is cast to ``dtype`` (the model's compute dtype) when given; SDPA takes it as an
    additive bias and transformers passes a 4-D mask through untouched.
    """
    mask = batch["attention_mask"]
    if dtype is not None and mask.dtype != dtype:
        mask = mask.to(dtype)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": mask,
        "position_ids": batch["position_ids"],
        "shift_labels": batch["shift_labels"],
        "use_cache": False,
    }


def sum_by_response(per_token: torch.Tensor, batch: dict[str, torch.Tensor]):
    """Per-position log-probs [B, T] → summed log-probs [N] and token counts [N] per response."""
    owner = batch["label_owner"].to(per_token.device)
    n = batch["list_index"].shape[0]
    keep = owner >= 0
    logps = per_token.new_zeros(n).index_add(0, owner[keep], per_token[keep])
    lengths = torch.bincount(owner[keep], minlength=n)
    return logps, lengths


def tokens_per_record(prompt_len: int, response_lens: Iterable[int]) -> tuple[int, int]:
    """(unshared, shared) tokens through the model for one record."""
    lens = list(response_lens)
    unshared = sum(prompt_len + n for n in lens)
    shared = max(prompt_len - 1, 0) + sum(n + min(prompt_len, 1) for n in lens)
    return unshared, shared


def packing_blocker(spec: Any, columns: Sequence[str]) -> str | None:
    """Why an objective's data cannot be packed (None if it can): packing shares one prompt per list and
    reads all responses in one row, so per-response prompts, scored prompts (``spec.joint``) and KTO's
    mismatched-completion slot, which is forwarded apart, all need one row per response."""
    if spec is not None and spec.joint:
        return f"objective {spec.name} scores the prompt tokens"
    if "response_prompt_ids" in columns:
        return "the data gives each response its own prompt"
    if spec is not None and "kl_logratios" in spec.inputs:
        return f"objective {spec.name} forwards its mismatched completions apart"
    return None


def use_shared_prompt(
    mode: str | bool, dataset: Any, spec: Any = None, min_saving: float = 1.25, sample: int = 256
) -> bool:
    """Resolve ``train.shared_prompt`` (auto | on | off) for a tokenized dataset and an objective ``spec``.

    ``auto`` packs when it cuts the tokens through the model by at least ``min_saving``× on the first
    ``sample`` records (long prompts relative to responses, K ≥ 2) and nothing blocks packing
    (``packing_blocker``); ``on`` where something does is an error.
    """
    if mode not in (True, False, None, "on", "true", "off", "false", "auto"):
        raise ValueError(f"train.shared_prompt must be auto, on or off, not {mode!r}")
    if mode in (False, "off", "false", None):
        return False
    blocker = packing_blocker(spec, getattr(dataset, "column_names", ()))
    if blocker:
        if mode != "auto":
            raise PrefrunError(f"train.shared_prompt=on cannot pack: {blocker}; set train.shared_prompt=off or auto")
        return False
    if mode in (True, "on", "true"):
        return True
    n = min(len(dataset), sample)
    rows = dataset.select(range(n)) if hasattr(dataset, "select") else dataset[:n]
    unshared = shared = 0
    for row in rows:
        u, s = tokens_per_record(len(row["prompt_ids"]), map(len, row["response_ids"]))
        unshared, shared = unshared + u, shared + s
    return shared > 0 and unshared >= min_saving * shared
