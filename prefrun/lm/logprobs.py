"""The one routine for response log-probs: summed log π(y | x) and token counts of a batch, one forward.

Training, the reference precompute, PoFT's baselines, the entanglement probe, the sampler's check and
every evaluator call it. It reads per-token log-probs through TRL's fused LM head
(``trl.trainer.utils.add_fused_lm_head``), which projects only the scored positions in tiles and never
builds [N, T, V] logits; a model that does not carry the head yet gets it (``with_fused_head``), which
leaves ``generate`` and the plain forward unchanged.

Two batch layouts, both made by the collators of ``prefrun.data``:

- ``ListCollator``: one row per (record, response), ``completion_mask`` = 1 on scored tokens;
- ``SharedPromptCollator``: one row per record, the prompt once (``label_owner``, ``shift_labels``).

    log π(y | x) = Σ_t log π(y_t | x, y_<t)      summed over the scored tokens of each response
"""

from __future__ import annotations

from typing import Any

import torch

from prefrun.data.collator import ListCollator, to_lists
from prefrun.data.shared_prompt import shared_prompt_inputs, sum_by_response

_FUSED = "_prefrun_fused_head"


def _base(model: Any) -> Any:
    """The transformers model under PEFT / DDP wrappers (where the fused head is attached)."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # PEFT
        inner = inner.get_base_model()
    return inner


def with_fused_head(model: Any) -> Any:
    """``model`` with TRL's fused LM head attached once (DPOTrainer attaches it to the models it trains)."""
    base = _base(model)
    if not getattr(base, _FUSED, False) and "forward" not in vars(base):
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(base)
    setattr(base, _FUSED, True)
    return model


def response_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs [N] and token counts [N] of the N responses of ``batch``, in ``list_index`` order.

    Gradients flow when the caller enables them; the model's train/eval mode is left as it is.
    """
    with_fused_head(model)
    if "label_owner" in batch:  # shared-prompt packing: 4-D mask, restarted positions, pre-shifted labels
        dtype = next(model.parameters()).dtype
        kwargs = shared_prompt_inputs(batch, dtype if dtype.is_floating_point else None)
        return sum_by_response(model(**kwargs, fused_lm_head=True).log_probs, batch)
    completion_mask = batch["completion_mask"]
    labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=labels,
        use_cache=False,
        fused_lm_head=True,
    )
    shift_mask = completion_mask[:, 1:].to(out.log_probs.device)
    per_token = out.log_probs[:, -shift_mask.size(1) :]
    return (per_token * shift_mask).sum(dim=1), shift_mask.sum(dim=1)


@torch.no_grad()
def score_rows(
    model: Any,
    rows: list[dict[str, Any]],
    *,
    batch_size: int = 16,
    score_prompt: bool = False,
    stage: str = "scoring",
) -> tuple[list[list[float]], list[list[int]]]:
    """Summed log-probs and token counts of every response of tokenized ``rows``, without gradient.

    ``rows``: ``tokenize_record`` output (``prompt_ids``, ``response_ids[K]``, optional
    ``response_prompt_ids``); batches of ``batch_size`` rows collated as in training (ListCollator), on the
    model's device. Returns one list of K floats (and K counts) per row. ``stage``: the name its progress
    display shows (rows/total, rate, ETA; only a closing line when short).
    """
    from prefrun.results.progress import Progress

    collate = ListCollator(pad_token_id=0, score_prompt=score_prompt)  # padding is masked out: any id will do
    device = next(model.parameters()).device
    sums: list[list[float]] = []
    counts: list[list[int]] = []
    fields = ("prompt_ids", "response_ids", "response_prompt_ids")
    shown = Progress(stage, len(rows), label="rows", unit="row", min_interval=10)
    for start in range(0, len(rows), batch_size):
        chunk = [{k: r[k] for k in fields if r.get(k)} for r in rows[start : start + batch_size]]
        batch = collate(chunk)
        logps, lengths = response_logps(model, {k: v.to(device) for k, v in batch.items()})
        b, k = batch["mask"].shape
        lists = to_lists(logps.float().cpu(), batch["list_index"], b, k)
        lens = to_lists(lengths.cpu(), batch["list_index"], b, k)
        sums.extend(row[m].tolist() for row, m in zip(lists, batch["mask"]))
        counts.extend([int(x) for x in row[m].tolist()] for row, m in zip(lens, batch["mask"]))
        shown.update(len(chunk))
    shown.close()
    return sums, counts
