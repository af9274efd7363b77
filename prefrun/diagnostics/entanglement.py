"""Gradient entanglement (Yuan et al. 2024, "A Common Pitfall of Margin-based Language Model Alignment:
Gradient Entanglement", ICLR 2025, arXiv 2410.13828).

With g_w = ∇_θ log π_θ(y_w|x) and g_l = ∇_θ log π_θ(y_l|x) (summed response log-probs), one DPO step of
coefficient C = η β σ(−βh) changes, to first order,

    Δ log π_w ≈ C (‖g_w‖² − ⟨g_w, g_l⟩)        Δ log π_l ≈ C (⟨g_w, g_l⟩ − ‖g_l‖²)

so the chosen log-prob rises iff ⟨g_w, g_l⟩ ≤ ‖g_w‖², the rejected one falls iff ⟨g_w, g_l⟩ ≤ ‖g_l‖², and
both hold iff ⟨g_w, g_l⟩ / min(‖g_w‖², ‖g_l‖²) ≤ 1 (a ratio > 1 flags entanglement). The reference code
(HumainLab/Understand_MarginPO ``analysis/grad_plot.py``) takes min(‖g_w‖², ‖g_w‖²); here it is the min
of both norms.

``entanglement`` measures these on a probe batch of (prompt, chosen, rejected) pairs, restricted to a
parameter subset (``default_parameters``: the last decoder block + LM head, or the trainable LoRA
parameters of a PEFT model; or ``select_parameters`` by name regexes). The gradients of every example's
chosen and rejected log-prob come from ``torch.autograd.grad`` over one shared forward, so ``.grad`` is
never touched and training is unaffected. Per-example dot products are accumulated in (at least) fp32
and averaged over the probe batch:

    inner  = mean_i ⟨g_w,i, g_l,i⟩        norm_w = sqrt(mean_i ‖g_w,i‖²)        norm_l likewise
    cosine = mean_i ⟨g_w,i, g_l,i⟩ / (‖g_w,i‖ ‖g_l,i‖)
    ratio  = inner / min(norm_w², norm_l²)
    pred_dlogp_chosen = sign(norm_w² − inner)        pred_dlogp_rejected = sign(inner − norm_l²)

``GradientEntanglementCallback`` logs them every N steps on a fixed probe batch, next to the realised
change of the probe's mean chosen and rejected log-probs since the previous measurement (compare the
realised change logged at step t with the prediction logged at the previous measurement).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from prefrun.data.collator import to_lists
from prefrun.errors import PrefrunError
from prefrun.lm.logprobs import response_logps

PREFIX = "entanglement/"
LogpsFn = Callable[[Any, dict[str, torch.Tensor]], Any]


# --- parameter subsets ---------------------------------------------------------------------------------
def _unique_trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """Drop frozen and repeated (tied) parameters, keeping the first occurrence's order."""
    seen: set[int] = set()
    out = []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder's list of blocks: the longest ModuleList under ``get_decoder()`` (layers, h, blocks...)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    lists = [m for m in decoder.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise PrefrunError(f"{type(model).__name__}: no decoder blocks found; set diagnostics.*.params to regexes")
    return max(lists, key=len)


def default_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA parameters of a PEFT model; otherwise the last decoder block + the LM head.

    With tied embeddings the LM head's weight is the input embedding: it is included once (its gradient
    then holds both uses, which is the true gradient of that parameter).
    """
    if _is_peft(model):
        params = _unique_trainable(model.parameters())
    else:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        params = _unique_trainable([*_decoder_blocks(model)[-1].parameters(), *(head.parameters() if head else [])])
    if not params:
        raise PrefrunError("gradient entanglement: the default parameter subset has no trainable parameter")
    return params


def select_parameters(model: nn.Module, patterns: Sequence[str]) -> list[nn.Parameter]:
    """The trainable parameters whose name matches any of ``patterns`` (``re.search``), each once."""
    compiled = [re.compile(p) for p in patterns]
    params = _unique_trainable(p for n, p in model.named_parameters() if any(c.search(n) for c in compiled))
    if not params:
        raise PrefrunError(f"gradient entanglement: params={list(patterns)} match no trainable parameter")
    return params


def resolve_parameters(model: nn.Module, params: Any = None) -> list[nn.Parameter]:
    """``params``: None (``default_parameters``), a list of name regexes, or a list of parameters."""
    if params is None:
        return default_parameters(model)
    params = list(params)
    if all(isinstance(p, str) for p in params):
        return select_parameters(model, params)
    return _unique_trainable(params)


# --- the measurement -----------------------------------------------------------------------------------
def summed_response_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probs [N] of the response tokens of each row: the training readout (``prefrun.lm``)."""
    return response_logps(model, batch)[0]


def _row_logps(fn: LogpsFn, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = fn(model, batch)
    return out[0] if isinstance(out, tuple) else out


def pair_logps(
    model: Any, batch: dict[str, torch.Tensor], batch_l: dict[str, torch.Tensor] | None = None, logps_fn=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected summed log-probs [B], with their graph.

    One pair batch (ListCollator layout, ``batch_l`` None): slot 0 of each record is chosen, slot 1 rejected.
    Two batches: row i of ``batch`` (chosen) pairs with row i of ``batch_l`` (rejected).
    """
    fn = logps_fn or summed_response_logps
    if batch_l is not None:
        chosen, rejected = _row_logps(fn, model, batch), _row_logps(fn, model, batch_l)
        if chosen.shape != rejected.shape:
            raise ValueError(f"chosen batch has {chosen.shape[0]} rows, rejected batch {rejected.shape[0]}")
        return chosen, rejected
    mask = batch["mask"]
    if mask.shape[1] < 2 or not bool(mask[:, :2].all()):
        raise ValueError("a pair batch needs a chosen (slot 0) and a rejected (slot 1) response in every record")
    lists = to_lists(_row_logps(fn, model, batch), batch["list_index"], mask.shape[0], mask.shape[1])
    return lists[:, 0], lists[:, 1]


def _sign(x: float) -> float:
    return float((x > 0) - (x < 0))


def summarize(inner: Sequence[float], sq_w: Sequence[float], sq_l: Sequence[float]) -> dict[str, float]:
    """Average per-example ⟨g_w,g_l⟩, ‖g_w‖², ‖g_l‖² into the logged metrics (see the module docstring)."""
    n = len(inner)
    ip, ww, ll = sum(inner) / n, sum(sq_w) / n, sum(sq_l) / n
    cos = [ip_i / math.sqrt(w * r) if w > 0 and r > 0 else 0.0 for ip_i, w, r in zip(inner, sq_w, sq_l)]
    floor = min(ww, ll)  # Yuan et al.'s condition needs BOTH norms (the reference code used ‖g_w‖² twice)
    return {
        PREFIX + "inner": ip,
        PREFIX + "norm_w": math.sqrt(ww),
        PREFIX + "norm_l": math.sqrt(ll),
        PREFIX + "cosine": sum(cos) / n,
        PREFIX + "ratio": ip / floor if floor > 0 else math.nan,
        PREFIX + "pred_dlogp_chosen": _sign(ww - ip),
        PREFIX + "pred_dlogp_rejected": _sign(ip - ll),
    }


def entanglement(
    model: Any,
    batch: dict[str, torch.Tensor],
    batch_l: dict[str, torch.Tensor] | None = None,
    params: Any = None,
    *,
    logps_fn: LogpsFn | None = None,
) -> dict[str, float]:
    """Gradient-entanglement metrics of ``model`` on a probe batch (see ``pair_logps`` for the batch layouts).

    ``params``: None (``default_parameters``), name regexes, or parameters. ``logps_fn(model, batch)``
    returns summed response log-probs per row (or a tuple whose first item is that); default: from the
    training routine. Also returns the probe's mean chosen/rejected log-probs (``logp_chosen``, ``logp_rejected``).
    The model's train/eval mode is left as it is; ``.grad`` is never written.
    """
    subset = resolve_parameters(model, params)
    with torch.enable_grad():
        chosen, rejected = pair_logps(model, batch, batch_l, logps_fn)
        inner, sq_w, sq_l = [], [], []
        for i in range(chosen.shape[0]):
            g_w = torch.autograd.grad(chosen[i], subset, retain_graph=True, allow_unused=True)
            g_l = torch.autograd.grad(rejected[i], subset, retain_graph=i + 1 < chosen.shape[0], allow_unused=True)
            acc = torch.zeros(3, dtype=torch.promote_types(subset[0].dtype, torch.float32), device=chosen.device)
            for a, b in zip(g_w, g_l):
                a = None if a is None else a.reshape(-1).to(acc.dtype)
                b = None if b is None else b.reshape(-1).to(acc.dtype)
                if a is not None:
                    acc[1] += a @ a
                if b is not None:
                    acc[2] += b @ b
                if a is not None and b is not None:
                    acc[0] += a @ b
            wl, ww, ll = acc.tolist()
            inner.append(wl)
            sq_w.append(ww)
            sq_l.append(ll)
    metrics = summarize(inner, sq_w, sq_l)
    metrics[PREFIX + "logp_chosen"] = chosen.detach().float().mean().item()
    metrics[PREFIX + "logp_rejected"] = rejected.detach().float().mean().item()
    return metrics


# --- the training callback -----------------------------------------------------------------------------
def probe_records(dataset: Any, probe_size: int, drop_last_slot: bool = False) -> list[dict[str, Any]]:
    """Pairs (best, worst response by score) of the first ``probe_size`` records; ties and K < 2 skipped.

    ``drop_last_slot``: the dataset's last list slot is not a real response (KTO's mismatched completion).
    """
    records = []
    for i in range(min(probe_size, len(dataset))):
        row = dataset[i]
        responses, scores = list(row["response_ids"]), list(row["scores"])
        if drop_last_slot:
            responses, scores = responses[:-1], scores[:-1]
        if len(responses) < 2:
            continue
        best = max(range(len(scores)), key=scores.__getitem__)
        worst = min(range(len(scores)), key=scores.__getitem__)
        if scores[best] == scores[worst]:
            continue
        records.append(
            {
                "prompt_ids": row["prompt_ids"],
                "response_ids": [responses[best], responses[worst]],
                "scores": [float(scores[best]), float(scores[worst])],
            }
        )
    if not records:
        raise PrefrunError(
            f"diagnostics.gradient_entanglement: the first {probe_size} training records hold no list of ≥ 2"
            " responses with different scores (unpaired data?); set diagnostics.gradient_entanglement.every=0"
        )
    return records


class GradientEntanglementCallback(TrainerCallback):
    """Log ``entanglement/*`` every ``every`` optimizer steps (and at the start) on a fixed probe batch.

    The probe: chosen = best, rejected = worst response of the first ``probe_size`` training records, built
    once with the trainer's collator. Values are appended to ``trainer._metrics["train"]``, which TRL's
    ``DPOTrainer.log`` averages into the next logged row (metrics.jsonl, W&B). Measured on the main process
    only, in eval mode (restored afterwards), with ``torch.autograd.grad``: training is unaffected.
    """

    def __init__(self, trainer: Any, every: int, probe_size: int = 8, params: Any = None):
        if every < 1:
            raise PrefrunError(f"diagnostics.gradient_entanglement.every must be ≥ 1 to log, got {every}")
        if probe_size < 1:
            raise PrefrunError(f"diagnostics.gradient_entanglement.probe_size must be ≥ 1, got {probe_size}")
        self.trainer = trainer
        self.every = every
        self.probe_size = probe_size
        self.params = None if params is None else list(params)
        self._probe: dict[str, torch.Tensor] | None = None
        self._subset: list[nn.Parameter] | None = None
        self._last: tuple[float, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
            raise PrefrunError("diagnostics.gradient_entanglement needs unsharded parameters (no FSDP / DeepSpeed)")
        self.measure()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.measure()

    def _logps_fn(self) -> LogpsFn:
        trainer = self.trainer
        if hasattr(trainer, "_response_logps"):  # the ListTrainer readout (fused LM head, shared-prompt packing)
            return lambda model, batch: trainer._response_logps(model, batch, reference=False, count=False)
        return summed_response_logps

    def measure(self) -> dict[str, float]:
        """Measure once and append to the trainer's train metrics; {} off the main process."""
        trainer = self.trainer
        if not trainer.accelerator.is_main_process:
            return {}
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self._probe is None:
            objective = getattr(trainer, "objective", None)
            drop_last = objective is not None and "kl_logratios" in objective.spec.inputs
            records = probe_records(trainer.train_dataset, self.probe_size, drop_last_slot=drop_last)
            device = trainer.accelerator.device
            self._probe = {k: v.to(device) for k, v in trainer.data_collator(records).items()}
            self._subset = resolve_parameters(model, self.params)
        was_training = model.training
        model.eval()
        try:
            with trainer.compute_loss_context_manager():
                metrics = entanglement(model, self._probe, params=self._subset, logps_fn=self._logps_fn())
        finally:
            model.train(was_training)
        now = (metrics[PREFIX + "logp_chosen"], metrics[PREFIX + "logp_rejected"])
        if self._last is not None:
            metrics[PREFIX + "realised_dlogp_chosen"] = now[0] - self._last[0]
            metrics[PREFIX + "realised_dlogp_rejected"] = now[1] - self._last[1]
        self._last = now
        for key, value in metrics.items():
            trainer._metrics["train"][key].append(value)
        return metrics
