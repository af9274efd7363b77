"""Deita: score first (complexity × quality), then admit only records unlike those already admitted.

Liu et al., "What Makes Good Data for Alignment? A Comprehensive Study of Automatic Data Selection in
Instruction Tuning" (ICLR 2024), Sec. 3 (Score-First, Diversity-Aware selection):

    s(x) = c(x) · q(x)                                       complexity × quality
    walk the records by s descending (ties: the earlier record first);
    admit x  iff  max_{a admitted} cos(e(x), e(a)) ≤ τ      (τ = 0.9), until the budget is met

e(x) is an embedding of the record's text (pool.py's ``text=``); Deita uses the last layer's hidden state
at the last token of a causal LM (``embedder=hidden_states``). The filter may run out of records before
the budget: it then keeps fewer and says so (``details.short_by``), as Deita does.

Scorers (``complexity=``, ``quality=``) are names below or ``field:<key>`` (a number the record carries).
Deita's own scorers are LLaMA models fine-tuned to rate "##Complexity:" / "##Quality:" prompts 1–6; here
they are pluggable, and on the sort testbed a task feature and the oracle stand in for them:

    complexity  prompt_tokens   whitespace tokens of the prompt text (sort: number of items + 2)
                sort_items      the sort prompt's number of items (fails on any other prompt)
    quality     chosen_score    the record's best score (the chosen response's)
                oracle          the dataset's oracle reward of the chosen response (synthetic tasks)

A scorer that fails, or returns a negative or non-finite score, raises a PrefrunError naming the record.
The reference implementation instead returns a score of 3.0 whenever the scorer's output cannot be read,
which silently ranks unscorable records mid-table; here such a record stops the step.

Embedders (``embedder=``): ``hashed`` (default, numpy: hashed bag of whitespace tokens, ``ngram``-grams
up to n, ``embed_dim`` buckets, crc32 so the hash is the same in every process) or ``hidden_states``
(``embed_model``: a model preset or a model directory; batched, torch).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prefrun.data.records import Record
from prefrun.errors import PrefrunError
from prefrun.selection.pool import budget, check_budget, check_text_mode, chosen_response, prompt_text, record_text
from prefrun.selection.steps import SELECTION_STEPS, Selection, SelectionContext

log = logging.getLogger("prefrun")

Scorer = Callable[[Record, SelectionContext], float]


def _prompt_tokens(record: Record, ctx: SelectionContext) -> float:
    return float(len(prompt_text(record["prompt"]).split()))


def _sort_items(record: Record, ctx: SelectionContext) -> float:
    from prefrun.data.synthetic import PROMPT_PREFIX, PROMPT_SUFFIX, parse_prompt

    prompt = record["prompt"]
    if not isinstance(prompt, str) or not prompt.startswith(PROMPT_PREFIX) or not prompt.endswith(PROMPT_SUFFIX):
        raise ValueError(f"not a sort prompt: {str(prompt)[:40]!r}")
    return float(len(parse_prompt(prompt)))


def _chosen_score(record: Record, ctx: SelectionContext) -> float:
    return float(max(record["scores"]))


def _oracle(record: Record, ctx: SelectionContext) -> float:
    if ctx.reward_fn is None:
        raise PrefrunError("data.select.quality=oracle needs a dataset with an oracle; use quality=chosen_score")
    return float(ctx.reward_fn(record["prompt"], chosen_response(record)))


COMPLEXITY: dict[str, Scorer] = {"prompt_tokens": _prompt_tokens, "sort_items": _sort_items}
QUALITY: dict[str, Scorer] = {"chosen_score": _chosen_score, "oracle": _oracle}


def scorer(kind: str, name: str) -> Scorer:
    """The scorer ``name`` of ``kind`` (complexity | quality), or ``field:<key>``."""
    if name.startswith("field:"):
        key = name.removeprefix("field:")
        return lambda record, ctx: float(record[key])
    table = COMPLEXITY if kind == "complexity" else QUALITY
    if name not in table:
        raise PrefrunError(f"data.select.{kind}={name!r}; available: {', '.join(table)}, field:<key>")
    return table[name]


def deita_scores(records: Sequence[Record], complexity: str, quality: str, ctx: SelectionContext) -> list[float]:
    """c(x) · q(x) for each record; any failure raises (never a default score)."""
    scorers = [
        ("complexity", complexity, scorer("complexity", complexity)),
        ("quality", quality, scorer("quality", quality)),
    ]
    out = []
    for i, record in enumerate(records):
        product = 1.0
        for kind, name, fn in scorers:
            try:
                value = fn(record, ctx)
            except PrefrunError:
                raise
            except Exception as e:  # noqa: BLE001 - any scorer error becomes the record's one-line message
                raise PrefrunError(
                    f"data.select.{kind}={name} failed on record {i} ({type(e).__name__}: {e}); choose a scorer "
                    "this dataset supports"
                ) from e
            if not math.isfinite(value) or value < 0:
                raise PrefrunError(
                    f"data.select.{kind}={name} gave {value!r} for record {i}; Deita's product needs finite "
                    "scores ≥ 0: choose a non-negative scorer"
                )
            product *= value
        out.append(product)
    return out


class HashedBagEmbedder:
    """L2-normalised counts of whitespace tokens (and n-grams up to ``ngram``) hashed into ``dim`` buckets."""

    def __init__(self, dim: int = 4096, ngram: int = 1) -> None:
        if dim < 1 or ngram < 1:
            raise PrefrunError("data.select.embed_dim and data.select.ngram must be positive")
        self.dim, self.ngram = dim, ngram

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = text.split()
            for n in range(1, self.ngram + 1):
                for j in range(len(tokens) - n + 1):
                    out[row, zlib.crc32(" ".join(tokens[j : j + n]).encode()) % self.dim] += 1.0
        return normalised(out)


class HiddenStateEmbedder:
    """The last layer's hidden state at each text's last token (Deita's CLM embedder), L2-normalised."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, max_length: int = 512, device: str = "cpu"):
        self.model, self.tokenizer = model.to(device).eval(), tokenizer
        self.batch_size, self.max_length, self.device = batch_size, max_length, device

    @classmethod
    def from_model(cls, name: str, ctx: SelectionContext, batch_size: int = 32) -> HiddenStateEmbedder:
        from prefrun.models.loading import load_model_and_tokenizer

        path, model_cfg = embed_model_path(name, ctx)
        return cls(*load_model_and_tokenizer(path, model_cfg, ctx.device), batch_size=batch_size, device=ctx.device)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        parts = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                ).to(self.device)
                hidden = self.model(**batch, output_hidden_states=True).hidden_states[-1]
                mask = batch["attention_mask"]
                # The last real token of each row, whichever side the tokenizer pads: the highest index with mask 1.
                positions = torch.arange(mask.shape[1], device=mask.device)
                last = (mask * positions).argmax(dim=1)
                parts.append(hidden[torch.arange(hidden.shape[0]), last].float().cpu().numpy())
        return normalised(np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32))


def embed_model_path(name: str, ctx: SelectionContext) -> tuple[str, Any]:
    """(where the model loads from, its model config): a model preset, or a model directory."""
    from prefrun.models.loading import base_model_path
    from prefrun.models.presets import hub_defaults, model_preset, preset_names

    if name in preset_names():
        model_cfg = model_preset(name, where="data.select.embed_model")
    else:
        if not Path(name).expanduser().is_dir():
            raise PrefrunError(
                f"data.select.embed_model={name!r} is neither a model preset nor a directory; presets: "
                f"{', '.join(preset_names())}"
            )
        model_cfg = hub_defaults()
        model_cfg.name, model_cfg.path = name, name
    return base_model_path(model_cfg, list(ctx.words), Path(ctx.cache_dir) / "models"), model_cfg


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row (an empty text) stays zero, similar to nothing."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def diversity_filter(embeddings: np.ndarray, order: Sequence[int], tau: float, n_keep: int) -> tuple[list[int], int]:
    """Deita's Repr Filter: walk ``order``, admit a row iff its cosine similarity to every admitted row is ≤ τ,
    stop at ``n_keep``. Rows must be unit length. Returns (admitted indices in admission order, rejected count)."""
    admitted: list[int] = []
    bank = np.zeros((n_keep, embeddings.shape[1]), dtype=embeddings.dtype)  # admitted rows, filled in order
    rejected = 0
    for i in order:
        if len(admitted) == n_keep:
            break
        if admitted and float((bank[: len(admitted)] @ embeddings[i]).max()) > tau:
            rejected += 1
            continue
        bank[len(admitted)] = embeddings[i]
        admitted.append(i)
    return admitted, rejected


@SELECTION_STEPS.register("deita")
class Deita:
    version = 1
    cache_exempt = ("batch_size",)

    def __init__(
        self,
        *,
        k: int | None = None,
        fraction: float | None = None,
        tau: float = 0.9,
        complexity: str = "prompt_tokens",
        quality: str = "chosen_score",
        embedder: str = "hashed",
        embed_model: str | None = None,
        embed_dim: int = 4096,
        ngram: int = 1,
        batch_size: int = 32,
        text: str = "prompt_response",
    ) -> None:
        check_budget(k, fraction)
        check_text_mode(text)
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not -1 <= tau <= 1:
            raise PrefrunError(f"data.select.tau={tau!r} must be a cosine similarity in [-1, 1] (Deita: 0.9)")
        scorer("complexity", complexity), scorer("quality", quality)  # unknown names fail before any work
        if embedder not in ("hashed", "hidden_states"):
            raise PrefrunError(f"data.select.embedder={embedder!r} must be hashed or hidden_states")
        if embedder == "hidden_states" and not embed_model:
            raise PrefrunError("data.select.embedder=hidden_states needs data.select.embed_model=<model preset or dir>")
        self.k, self.fraction, self.tau, self.text = k, fraction, float(tau), text
        self.complexity, self.quality = complexity, quality
        self.embedder, self.embed_model, self.embed_dim, self.ngram = embedder, embed_model, embed_dim, ngram
        self.batch_size = batch_size

    def fingerprints(self, records: Sequence[Record], ctx: SelectionContext) -> dict[str, str]:
        if self.embedder != "hidden_states":
            return {}
        return {"embed_model": embed_model_path(str(self.embed_model), ctx)[0]}

    def embed(self, texts: Sequence[str], ctx: SelectionContext) -> np.ndarray:
        if self.embedder == "hidden_states":
            return HiddenStateEmbedder.from_model(str(self.embed_model), ctx, self.batch_size)(texts)
        return HashedBagEmbedder(self.embed_dim, self.ngram)(texts)

    def select(self, records: Sequence[Record], ctx: SelectionContext) -> Selection:
        n_keep = budget(len(records), self.k, self.fraction)
        scores = deita_scores(records, self.complexity, self.quality, ctx)
        order = sorted(range(len(records)), key=lambda i: (-scores[i], i))
        embeddings = self.embed([record_text(r, self.text) for r in records], ctx)
        admitted, rejected = diversity_filter(embeddings, order, self.tau, n_keep)
        if len(admitted) < n_keep:
            log.warning(
                "data.select=deita: only %d of %d records are at most tau=%g similar to each other; keeping %d "
                "(raise data.select.tau to keep more)",
                len(admitted),
                n_keep,
                self.tau,
                len(admitted),
            )
        return Selection(
            indices=sorted(admitted),
            details={
                "rejected_as_similar": rejected,
                "short_by": n_keep - len(admitted),
                "score_kept_mean": float(np.mean([scores[i] for i in admitted])),
                "score_all_mean": float(np.mean(scores)),
            },
        )
