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

from prefrun.data.collator import ListCollator, to_lists
from prefrun.data.records import Record
from prefrun.data.tokenize import tokenize_record
from prefrun.errors import PrefrunError
from prefrun.models.loading import base_model_path, load_model, load_tokenizer, model_dtype
from prefrun.trainers.ref_cache import ReferenceCache, model_fingerprint, tokenizer_fingerprint

BATCH_SIZE = 8  # records (K responses, each with its prompt) per forward


def model_conf_dir() -> Path:
    """conf/model, where the CLI's Hydra app finds the model presets."""
    from prefrun.cli import CONF_DIR

    return Path(CONF_DIR) / "model"


def preset_names(conf_dir: Path | None = None) -> list[str]:
    """The selectable model presets (files starting with _ are shared parts, not presets)."""
    conf_dir = conf_dir or model_conf_dir()
    return sorted(p.stem for p in conf_dir.glob("*.yaml") if not p.stem.startswith("_"))


def compose_preset(name: str, conf_dir: Path | None = None, _seen: tuple[str, ...] = ()) -> DictConfig:
    """conf/model/<name>.yaml merged with what its defaults list composes, in that list's order.

    Hydra's rules for a config in a group: entries are sibling configs of the same group, ``_self_``
    marks where the file's own keys go (at the end when it is not listed).
    """
    conf_dir = conf_dir or model_conf_dir()
    file = conf_dir / f"{name}.yaml"
    if name in _seen or not file.is_file():
        raise PrefrunError(f"model preset {name!r}: no conf/model/{name}.yaml (or a cycle in its defaults list)")
    own = OmegaConf.load(file)
    defaults = list(own.pop("defaults", []))
    if "_self_" not in defaults:
        defaults.append("_self_")
    out = OmegaConf.create()
    for entry in defaults:
        if entry == "_self_":
            out = OmegaConf.merge(out, own)
        elif isinstance(entry, str):
            out = OmegaConf.merge(out, compose_preset(entry, conf_dir, (*_seen, name)))
        else:
            raise PrefrunError(f"conf/model/{name}.yaml: defaults entry {entry!r} is not a model config name")
    return out


@dataclass
class Baseline:
    name: str  # for messages and logs
    path: str  # what from_pretrained loads: a local directory or a hub id
    model_cfg: Any  # the merged model config: revision, dtype, chat_template, attn_implementation, ...


def resolve_baseline(entry: Any, index: int, words: list[str], cache_dir: str | os.PathLike) -> Baseline:
    """One ``objective.baselines`` entry → what to load; a bad entry is a one-line PrefrunError."""
    where = f"objective.baselines[{index}]"
    conf_dir = model_conf_dir()
    if isinstance(entry, str) and entry in preset_names(conf_dir):
        cfg = compose_preset(entry, conf_dir)
    elif isinstance(entry, str | dict):
        fields = {"path": entry} if isinstance(entry, str) else dict(entry)
        hub = compose_preset("_hub", conf_dir)
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
            presets = ", ".join(preset_names(conf_dir))
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


def mean_response_logps(model: Any, rows: list[dict], device: Any, batch_size: int = BATCH_SIZE) -> list[list[float]]:
    """Per-token mean log-prob of every response of ``rows`` (tokenize_record output) under ``model``.

    Batches of ``batch_size`` records collated as in training (ListCollator: prompt + response rows, the
    completion mask on response tokens), TRL's ``selective_log_softmax`` in fp32, under no_grad. The first
    token of a sequence has no prediction, so a prompt-less response is scored from its second token.
    """
    import torch
    from trl.trainer.utils import selective_log_softmax

    collate = ListCollator(pad_token_id=0)  # padding is masked out; its id does not matter
    out: list[list[float]] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = collate([{"prompt_ids": r["prompt_ids"], "response_ids": r["response_ids"]} for r in chunk])
            ids = batch["input_ids"].to(device)
            logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device), use_cache=False).logits
            token_logps = selective_log_softmax(logits[:, :-1].float(), ids[:, 1:])
            scored = batch["completion_mask"][:, 1:].to(device)  # position t predicts token t + 1
            counts = scored.sum(-1)
            if bool((counts == 0).any()):
                i, k = batch["list_index"][int((counts == 0).nonzero()[0])].tolist()
                raise PrefrunError(f"record {start + i} response {k}: no token to score; raise train.max_response_len")
            means = ((token_logps * scored).sum(-1) / counts).cpu()
            lists = to_lists(means, batch["list_index"], len(chunk), batch["mask"].shape[1])
            out.extend(row[m].tolist() for row, m in zip(lists, batch["mask"]))
    return out


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
            scores="baseline_mean_logps/2",  # /2: collated as in training, TRL's selective log-softmax
            max_prompt_len=max_prompt_len,
            max_response_len=max_response_len,
        )
        # The cache keys on a datasets.Dataset of the scored columns, as the reference cache does in training.
        table = Dataset.from_dict({c: [row[c] for row in rows] for c in ("prompt_ids", "response_ids")})
        values = cache.load(table)
        if values is None:
            model = load_model(baseline.path, baseline.model_cfg, device)  # the tokenizer is already loaded
            model.to(run_device).eval()
            values = mean_response_logps(model, rows, run_device, batch_size)
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
