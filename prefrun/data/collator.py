"""The list collator: B records of K responses become one right-padded batch of ΣK sequences.

    >>> collate = ListCollator(pad_token_id=0)
    >>> batch = collate([
    ...     {"prompt_ids": [1, 2], "response_ids": [[3], [4, 5]], "scores": [1.0, 0.0]},
    ...     {"prompt_ids": [6], "response_ids": [[7]], "scores": [0.5]},
    ... ])
    >>> batch["input_ids"].tolist()        # one row per (record, response), prompt then response
    [[1, 2, 3, 0], [1, 2, 4, 5], [6, 7, 0, 0]]
    >>> batch["completion_mask"].tolist()  # 1 on response tokens
    [[0, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 0]]
    >>> batch["scores"].tolist(), batch["mask"].tolist()   # [B, K_max]; mask False on padded entries
    ([[1.0, 0.0], [0.5, 0.0]], [[True, True], [True, False]])
    >>> batch["list_index"].tolist()       # (record, slot) of each row, to scatter rows into [B, K_max]
    [[0, 0], [0, 1], [1, 0]]

Padded list entries get no row at all, so a batch with variable K costs only its real sequences.
Per-list extras (``ref_logps``, ``labels``) become [B, K_max]; per-record extras (``p_chosen``) [B].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

LIST_FIELDS = {
    "scores": torch.float32,
    "ref_logps": torch.float32,
    "labels": torch.bool,
    "baseline_logps": torch.float32,
    "udm_weights": torch.float32,  # BCO's UDM density-ratio weights (prefrun.trainers.density_ratio)
    "old_logps": torch.float32,  # online training: summed log-probs under the sampling policy (prefrun.online)
}
RECORD_FIELDS = {"p_chosen": torch.float32}


@dataclass
class ListCollator:
    """``score_prompt``: the completion mask covers the prompt too (joint log-probs of (x, y), DOVE).
    A record with ``response_prompt_ids`` gives each response its own prompt (joint preferences)."""

    pad_token_id: int
    score_prompt: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows, masks, index = [], [], []
        for b, ex in enumerate(examples):
            prompts = ex.get("response_prompt_ids") or [ex["prompt_ids"]] * len(ex["response_ids"])
            for k, (prompt, resp) in enumerate(zip(prompts, ex["response_ids"])):
                rows.append(list(prompt) + list(resp))
                masks.append([int(self.score_prompt)] * len(prompt) + [1] * len(resp))
                index.append((b, k))
        width = max(map(len, rows))
        out: dict[str, torch.Tensor] = {
            "input_ids": torch.tensor([r + [self.pad_token_id] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "completion_mask": torch.tensor([m + [0] * (width - len(m)) for m in masks]),
        }
        out.update(list_fields(examples, index))
        return out


def list_fields(examples: list[dict[str, Any]], index: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """What every collator adds: ``list_index`` of each row, the [B, K_max] ``mask``, the per-list fields
    padded to K_max and the per-record fields, for the records' extra fields present in the batch."""
    k_max = max(len(ex["response_ids"]) for ex in examples)
    out = {
        "list_index": torch.tensor(index),
        "mask": torch.tensor(
            [[k < len(ex["response_ids"]) for k in range(k_max)] for ex in examples], dtype=torch.bool
        ),
    }
    for name, dtype in LIST_FIELDS.items():
        if name in examples[0] and examples[0][name] is not None:
            pad = False if dtype is torch.bool else 0.0
            out[name] = torch.tensor([list(ex[name]) + [pad] * (k_max - len(ex[name])) for ex in examples], dtype=dtype)
    for name, dtype in RECORD_FIELDS.items():
        if name in examples[0] and examples[0][name] is not None:
            out[name] = torch.tensor([ex[name] for ex in examples], dtype=dtype)
    return out


def to_lists(values: torch.Tensor, list_index: torch.Tensor, batch_size: int, k_max: int) -> torch.Tensor:
    """Scatter per-row values [N] into [B, K_max] (zeros on padded entries), keeping the graph."""
    out = values.new_zeros(batch_size, k_max)
    return out.index_put((list_index[:, 0], list_index[:, 1]), values)
