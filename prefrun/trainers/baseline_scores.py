"""PoFT's baseline scores: each response's per-token mean log-prob under M frozen aligned models, cached.

``objective.baselines`` lists the models (conf/objective/poft.yaml). Each entry is

- a string naming a model preset of conf/model (``zephyr7b_sft``): the preset with what its defaults
  list composes (``_hub``), as ``model=<name>`` would give it;
- any other string: a local model directory, or a hub id ``org/name`` (with the ``_hub`` defaults);
- a mapping with ``path`` and optionally ``revision``, ``chat_template``, ``dtype`` (any key of
  conf/model/_hub.yaml), over the ``_hub`` defaults.

Each baseline scores every record with its own tokenizer and chat template (``tokenize_record``, the
train.max_prompt_len / max_response_len truncation, EOS included as in training): ℓ̄_j(y) = the sum of
the response's token log-probs (fp32 log-softmax, no_grad) over its token count. ``record["baseline_logps"]``
becomes the mean over the M baselines, one float per response. A prompt given as plain text stays plain
text (the policy sees it so too); chat-message prompts go through each baseline's chat template.

Each baseline's values are cached under ``<cache_dir>/baselines`` with the reference cache's machinery
(prefrun.trainers.ref_cache): keyed by the model (weight files or hub id + revision), its tokenizer
(vocabulary, chat template, EOS), the tokenized records, the max lengths and the dtype, written to a
temporary file and renamed. A hit loads neither the model nor its weights, so a sweep scores once.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from prefrun.data.records import Record
from prefrun.data.tokenize import tokenize_record
from prefrun.errors import PrefrunError
from prefrun.lm.logprobs import score_rows
from prefrun.models.loading import base_model_path, load_model, load_tokenizer, model_dtype
from prefrun.models.presets import hub_defaults, model_preset, preset_names
from prefrun.trainers.ref_cache import ReferenceCache, model_fingerprint, tokenizer_fingerprint

BATCH_SIZE = 8  # records (K responses, each with its prompt) per forward


@dataclass
class Baseline:
    name: str  # for messages and logs
    path: str  # what from_pretrained loads: a local directory or a hub id
    model_cfg: Any  # the merged model config: revision, dtype, chat_template, attn_implementation, ...


def resolve_baseline(entry: Any, index: int, words: list[str], cache_dir: str | os.PathLike) -> Baseline:
    """One ``objective.baselines`` entry → what to load; a bad entry is a one-line PrefrunError."""
    where = f"objective.baselines[{index}]"
    if isinstance(entry, str) and entry in preset_names():
        cfg = model_preset(entry, where)
    elif isinstance(entry, str | dict):
        fields = {"path": entry} if isinstance(entry, str) else dict(entry)
        hub = hub_defaults()
        unknown = sorted(set(fields) - (set(hub) - {"builtin"}))  # the built-in tiny model only by its preset
        if unknown or not fields.get("path"):
            problem = f"unknown key(s) {', '.join(unknown)}" if unknown else "no path"
            raise PrefrunError(
                f"{where}={entry!r}: {problem}; give a model preset name, a path, or "
                f"{{path: ..., revision: ..., chat_template: ..., dtype: ...}}"
            )
        fields.setdefault("name", str(fields["path"]))
        cfg = OmegaConf.merge(hub, fields)
    else:
        raise PrefrunError(f"{where}={entry!r}: give a model preset name, a path or a mapping with a path")
    if not cfg.get("builtin"):  # base_model_path's rule for local vs hub, with an error naming the entry
        path = str(cfg.path)
        looks_local = path.startswith((".", "/", "~")) or os.path.exists(path) or path.count("/") != 1
        if looks_local and not Path(path).expanduser().is_dir():
            presets = ", ".join(preset_names())
            raise PrefrunError(
                f"{where}={path!r} is neither a model preset ({presets}) nor an existing directory "
                "nor a hub id 'org/name'"
            )
    return Baseline(str(cfg.name), base_model_path(cfg, words, Path(cache_dir) / "models"), cfg)


def _load_tokenizer(baseline: Baseline, where: str) -> Any:
    """The baseline's tokenizer (no weights: a cache hit needs none), a load failure as one line naming the entry."""
    try:
        return load_tokenizer(baseline.path, baseline.model_cfg)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PrefrunError(f"{where} ({baseline.path}): cannot load its tokenizer: {first}") from None


def mean_response_logps(model: Any, rows: list[dict], batch_size: int = BATCH_SIZE) -> list[list[float]]:
    """Per-token mean log-prob of every response of ``rows`` (tokenize_record output) under ``model``.

    The training readout (``prefrun.lm.logprobs.score_rows``: collated as in training, TRL's fused head)
    divided by each response's token count. The first token of a sequence has no prediction, so a
    prompt-less response is scored from its second token.
    """
    sums, counts = score_rows(model, rows, batch_size=batch_size, stage="baseline log-probs")
    for i, row_counts in enumerate(counts):
        if 0 in row_counts:
            k = row_counts.index(0)
            raise PrefrunError(f"record {i} response {k}: no token to score; raise train.max_response_len")
    return [[s / c for s, c in zip(row_sums, row_counts)] for row_sums, row_counts in zip(sums, counts)]


def _run_device(device: str) -> Any:
    """The device the run uses; under several processes each rank uses its own GPU."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def score_records(
    records: list[Record],
    baselines: Any,
    *,
    words: list[str],
    cache_dir: str | os.PathLike,
    device: str,
    max_prompt_len: int,
    max_response_len: int,
    batch_size: int = BATCH_SIZE,
) -> dict[str, int]:
    """Set ``record["baseline_logps"]`` (K floats, mean over the baselines) on every record, in place.

    Returns {"models": M, "hits": h, "misses": m}: cache hits and misses over the M baselines.
    """
    import torch
    from datasets import Dataset

    if isinstance(baselines, DictConfig | ListConfig):
        baselines = OmegaConf.to_container(baselines, resolve=True)
    if isinstance(baselines, str):
        baselines = [baselines]
    if not isinstance(baselines, list) or not baselines:
        raise PrefrunError(f"objective.baselines={baselines!r}: give a non-empty list of model presets or paths")
    resolved = [resolve_baseline(entry, j, words, cache_dir) for j, entry in enumerate(baselines)]
    run_device = _run_device(device)
    chat = any(isinstance(r["prompt"], list) for r in records)
    totals = [[0.0] * len(r["responses"]) for r in records]
    hits = misses = 0
    for j, baseline in enumerate(resolved):
        where = f"objective.baselines[{j}]"
        tokenizer = _load_tokenizer(baseline, where)
        if chat and not tokenizer.chat_template:
            raise PrefrunError(
                f"{where} ({baseline.name}): its tokenizer has no chat template for the dataset's chat prompts; "
                "give the entry a chat_template"
            )
        rows = [tokenize_record(r, tokenizer, max_prompt_len, max_response_len) for r in records]
        dtype = model_dtype(baseline.model_cfg, device)
        cache = ReferenceCache(
            Path(cache_dir) / "baselines",
            model_fingerprint(baseline.path, baseline.model_cfg.get("revision")),
            tokenizer_fingerprint(tokenizer),
            dtype,
            scores="baseline_mean_logps/3",  # /3: the training readout (TRL's fused LM head)
            max_prompt_len=max_prompt_len,
            max_response_len=max_response_len,
        )
        # The cache keys on a datasets.Dataset of the scored columns, as the reference cache does in training.
        table = Dataset.from_dict({c: [row[c] for row in rows] for c in ("prompt_ids", "response_ids")})
        values = cache.load(table)
        if values is None:
            model = load_model(baseline.path, baseline.model_cfg, device)  # the tokenizer is already loaded
            model.to(run_device).eval()
            values = mean_response_logps(model, rows, batch_size)
            cache.store(table, values)
            del model  # free it before the next baseline loads
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        hits, misses = hits + cache.hits, misses + cache.misses
        for total, value in zip(totals, values):
            for k, v in enumerate(value):
                total[k] += v
    for record, total in zip(records, totals):
        record["baseline_logps"] = [v / len(resolved) for v in total]
    return {"models": len(resolved), "hits": hits, "misses": misses}
