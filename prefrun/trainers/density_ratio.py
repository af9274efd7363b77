"""BCO's UDM (underlying distribution matching): density-ratio weights on undesirable examples.

Jung et al. 2024 (arXiv 2404.04656) correct for desirable and undesirable prompts coming from different
distributions: a logistic-regression classifier (``class_weight="balanced"``) learns from prompt embeddings
whether a prompt came from the desirable set, and each undesirable example's loss is weighted by the density
ratio p/(1 − p) of its prompt, p = the classifier's probability "desirable", clamped to
[``min_density_ratio``, ``max_density_ratio``]; desirable examples weigh 1.

Follows TRL ≤ 1.10's ``trl/experimental/bco/bco_trainer.py``: the classifier is fit once before training on
up to ``prompt_sample_size`` prompts of each class (``_get_sample_prompt_embeddings``), with sklearn's
``LogisticRegression(class_weight="balanced")`` (C = 1, lbfgs), and the weight is
``(p / (1 − p + 1e-8)).clamp(min_density_ratio, max_density_ratio)`` (``_get_udm_weight``). Differences:
the sample is drawn without replacement from a seeded generator (TRL: ``np.random.choice`` with
replacement, from numpy's global state); lbfgs may run up to 1000 iterations (sklearn's default 100 often
stops short on raw LLM hidden states); and every record's weight is computed here once, before training,
instead of embedding each batch's prompts during training: the embedding model is frozen, so it is the
same number. The default embedding needs no extra model: the mean-pooled last hidden state of the
reference model (the initial policy) over each prompt's tokens. ``udm.embedding_model`` may name another
model (a local directory or a hub id) whose mean-pooled last hidden state embeds the decoded prompt text.

Under data parallelism rank 0 alone embeds the prompts and fits the classifier; its weights are broadcast
to the other ranks. A resumed run recomputes them, which gives the same weights (TRL saves the fitted
classifier with checkpoints instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prefrun.errors import PrefrunError
from prefrun.runtime.distributed import is_main_process

COLUMN = "udm_weights"  # per-list field [K] of each record (K = 1): 1 for desirable examples
EPS = 1e-8  # TRL's p / (1 − p + 1e-8)
MAX_ITER = 1000
log = logging.getLogger("prefrun")


@dataclass(frozen=True)
class UDMSettings:
    prompt_sample_size: int = 1024
    min_density_ratio: float = 0.5
    max_density_ratio: float = 10.0
    embedding_model: str | None = None  # None: the reference model's mean-pooled last hidden state


def udm_settings(udm_cfg: Any) -> UDMSettings | None:
    """The checked ``objective.udm`` block, or None when it is absent or ``enabled`` is false."""
    if not udm_cfg or not udm_cfg.get("enabled", False):
        return None
    known = {"enabled", "prompt_sample_size", "min_density_ratio", "max_density_ratio", "embedding_model"}
    unknown = sorted(set(udm_cfg) - known)
    if unknown:
        raise PrefrunError(f"objective.udm.{unknown[0]} is unknown; objective.udm takes: {', '.join(sorted(known))}")
    defaults = UDMSettings()

    def number(key: str, kind: type) -> Any:
        value = udm_cfg.get(key, getattr(defaults, key))
        try:
            if isinstance(value, bool) or (kind is int and float(value) != int(value)):
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            raise PrefrunError(
                f"objective.udm.{key}={value!r} is not {'an integer' if kind is int else 'a number'}; "
                f"set it like {getattr(defaults, key)}"
            ) from None

    size = number("prompt_sample_size", int)
    lo, hi = number("min_density_ratio", float), number("max_density_ratio", float)
    if size < 1:
        raise PrefrunError(f"objective.udm.prompt_sample_size={size} must be ≥ 1 (prompts per class); try 1024")
    if not (0 < lo <= hi < float("inf")):
        raise PrefrunError(
            f"objective.udm.min_density_ratio={lo} and max_density_ratio={hi} must satisfy 0 < min ≤ max < inf; "
            "BCO's defaults are 0.5 and 10.0"
        )
    model = udm_cfg.get("embedding_model")
    return UDMSettings(size, lo, hi, str(model) if model not in (None, "", "null") else None)


# --- the classifier and the weights ---------------------------------------------------------------------
def class_sample(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``size`` indices of each class (desirable, undesirable), sorted, drawn without replacement."""
    rng = np.random.default_rng(seed)
    picks = []
    for idx in (np.flatnonzero(labels), np.flatnonzero(~labels)):
        picks.append(np.sort(rng.choice(idx, size=size, replace=False)) if len(idx) > size else idx)
    return picks[0], picks[1]


def fit_prompt_classifier(desirable: np.ndarray, undesirable: np.ndarray) -> Any:
    """sklearn's balanced L2 logistic regression (C = 1), class 1 = desirable, as TRL's BCOTrainer fits it."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise PrefrunError("objective.udm.enabled=true needs scikit-learn: pip install scikit-learn") from None
    x = np.concatenate([desirable, undesirable]).astype(np.float64)
    y = np.concatenate([np.ones(len(desirable), dtype=np.int64), np.zeros(len(undesirable), dtype=np.int64)])
    return LogisticRegression(class_weight="balanced", max_iter=MAX_ITER).fit(x, y)


def density_ratios(classifier: Any, embeddings: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """p/(1 − p + 1e-8) clamped to [lo, hi], p = the classifier's probability that the prompt is desirable."""
    p = classifier.predict_proba(np.asarray(embeddings, dtype=np.float64))[:, list(classifier.classes_).index(1)]
    return np.clip(p / (1.0 - p + EPS), lo, hi)


def _both_classes(labels: Sequence[bool]) -> np.ndarray:
    """The labels as a bool array; a one-line error unless both classes occur (nothing to classify)."""
    labels = np.asarray(labels, dtype=bool).reshape(-1)
    n_des, n_und = int(labels.sum()), int((~labels).sum())
    if n_des == 0 or n_und == 0:
        raise PrefrunError(
            f"objective.udm.enabled=true needs desirable and undesirable examples, but the data has {n_des} "
            f"desirable and {n_und} undesirable; use data with both labels or set objective.udm.enabled=false"
        )
    return labels


def density_ratio_weights(
    labels: Sequence[bool],
    embed: Callable[[np.ndarray], np.ndarray],
    settings: UDMSettings,
    seed: int,
) -> tuple[np.ndarray, dict[str, float]]:
    """One weight per example: 1 for desirable ones, the clamped density ratio of the prompt for undesirable.

    ``embed(indices)`` returns the prompt embeddings [len(indices), H] of those examples; it is asked once,
    for the sampled desirable examples and every undesirable one. Also returns what the fit gave: the
    classifier's accuracy on its training sample per class (as TRL logs) and the mean undesirable weight.
    """
    labels = _both_classes(labels)
    des_sample, und_sample = class_sample(labels, settings.prompt_sample_size, seed)
    undesirable = np.flatnonzero(~labels)
    rows = np.union1d(des_sample, undesirable)
    emb = np.asarray(embed(rows), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(rows) or not np.isfinite(emb).all():
        raise PrefrunError(f"UDM prompt embeddings must be finite, one row per prompt; got shape {emb.shape}")
    at = {i: j for j, i in enumerate(rows.tolist())}

    def rows_of(idx: np.ndarray) -> np.ndarray:
        return emb[[at[i] for i in idx.tolist()]]

    x_des, x_und = rows_of(des_sample), rows_of(und_sample)
    classifier = fit_prompt_classifier(x_des, x_und)
    weights = np.ones(len(labels), dtype=np.float64)
    weights[undesirable] = density_ratios(
        classifier, rows_of(undesirable), settings.min_density_ratio, settings.max_density_ratio
    )
    info = {
        "classifier_accuracy_desirable": float(classifier.score(x_des, np.ones(len(x_des), dtype=np.int64))),
        "classifier_accuracy_undesirable": float(classifier.score(x_und, np.zeros(len(x_und), dtype=np.int64))),
        "sample_desirable": len(des_sample),
        "sample_undesirable": len(und_sample),
        "mean_undesirable_weight": float(weights[undesirable].mean()),
    }
    return weights, info


# --- prompt embeddings --------------------------------------------------------------------------------
@torch.no_grad()
def mean_pooled_embeddings(
    model: Any, prompts: Sequence[Sequence[int]], pad_token_id: int, batch_size: int, device: Any
) -> np.ndarray:
    """The mean over each prompt's tokens of ``model``'s last hidden state (no LM head), float32 [N, H].

    Batched, shortest prompts together, right-padded (causal attention: padding changes no real position).
    """
    backbone = getattr(model, "base_model", model)  # a *ForCausalLM's decoder; a bare encoder is its own
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[np.ndarray | None] = [None] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(max(len(prompts[i]) for i in chunk), 1)
            ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, : len(prompts[i])] = torch.as_tensor(list(prompts[i]), dtype=torch.long)
                mask[row, : len(prompts[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            for row, i in enumerate(chunk):
                out[i] = pooled[row].cpu().numpy()
    finally:
        model.train(was_training)
    return np.stack(out)  # type: ignore[arg-type]


def _prompt_embedder(
    model: Any, tokenizer: Any, prompt_ids: list[list[int]], settings: UDMSettings, device: Any, batch_size: int
) -> Callable[[np.ndarray], np.ndarray]:
    """``embed(indices)`` for density_ratio_weights: each distinct prompt embedded once."""

    def embed(indices: np.ndarray) -> np.ndarray:
        distinct: dict[tuple[int, ...], int] = {}
        for i in indices.tolist():
            distinct.setdefault(tuple(prompt_ids[i]), len(distinct))
        prompts = list(distinct)
        if settings.embedding_model is None:
            model.to(device)
            vectors = mean_pooled_embeddings(model, prompts, tokenizer.pad_token_id, batch_size, device)
        else:
            vectors = _external_embeddings(settings.embedding_model, tokenizer, prompts, device, batch_size)
        return vectors[[distinct[tuple(prompt_ids[i])] for i in indices.tolist()]]

    return embed


def _external_embeddings(
    name: str, tokenizer: Any, prompts: list[tuple[int, ...]], device: Any, batch_size: int
) -> np.ndarray:
    """Mean-pooled last hidden state of model ``name`` over each prompt's text, re-tokenized by its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    try:
        enc_tokenizer = AutoTokenizer.from_pretrained(name)
        encoder = AutoModel.from_pretrained(name, dtype=torch.float32).to(device)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PrefrunError(
            f"objective.udm.embedding_model={name!r} could not be loaded ({first}); give a local model directory "
            "or a hub id, or null to embed with the reference model"
        ) from None
    pad = enc_tokenizer.pad_token_id
    if pad is None:
        pad = enc_tokenizer.eos_token_id if enc_tokenizer.eos_token_id is not None else 0
    limit = enc_tokenizer.model_max_length if enc_tokenizer.model_max_length < 1_000_000 else None
    texts = tokenizer.batch_decode([list(p) for p in prompts], skip_special_tokens=True)
    encoded = [
        list(enc_tokenizer(t, truncation=limit is not None, max_length=limit)["input_ids"]) or [pad] for t in texts
    ]
    try:
        return mean_pooled_embeddings(encoder, encoded, pad, batch_size, device)
    finally:
        del encoder


def _same_on_every_rank(weights: np.ndarray, device: Any) -> np.ndarray:
    """Rank 0's weights on every rank (only rank 0 computes them)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return weights
    tensor = torch.as_tensor(weights, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.cpu().numpy()


def with_udm_weights(
    dataset: Any,
    model: Any,
    tokenizer: Any,
    objective_cfg: Any,
    objective: Any,
    *,
    device: Any,
    seed: int,
    batch_size: int = 64,
) -> tuple[Any, dict[str, float] | None]:
    """``dataset`` with a ``udm_weights`` column ([1.0] or [w] per record) when ``objective.udm.enabled``.

    ``model`` is the reference (the policy before training). Returns (dataset, what the fit gave or None).
    """
    settings = udm_settings(objective_cfg.get("udm") if objective_cfg is not None else None)
    if settings is None:
        return dataset, None
    if COLUMN not in objective.spec.inputs:
        raise PrefrunError(
            f"objective.udm.enabled=true but objective {objective.name} takes no UDM weights; "
            "use objective=bco or drop objective.udm"
        )
    if "labels" not in dataset.column_names:
        raise PrefrunError("objective.udm.enabled=true needs unpaired data with desirable/undesirable labels")
    labels = _both_classes([bool(row[0]) for row in dataset["labels"]])  # checked on every rank, before the split
    if not is_main_process():  # rank 0 embeds and fits; the others receive its weights
        weights = _same_on_every_rank(np.ones(len(labels)), device)
        return dataset.add_column(COLUMN, [[float(w)] for w in weights]), None
    embed = _prompt_embedder(model, tokenizer, dataset["prompt_ids"], settings, device, batch_size)
    weights, info = density_ratio_weights(labels, embed, settings, seed)
    weights = _same_on_every_rank(weights, device)
    log.info(
        "UDM classifier accuracy on its sample: desirable %.3f, undesirable %.3f; mean undesirable weight %.3f",
        info["classifier_accuracy_desirable"],
        info["classifier_accuracy_undesirable"],
        info["mean_undesirable_weight"],
    )
    return dataset.add_column(COLUMN, [[float(w)] for w in weights]), info
