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
from prefrun.models.loading import base_model_path, load_model_and_tokenizer
from prefrun.trainers.ref_cache import ReferenceCache, model_fingerprint, tokenizer_fingerprint

BATCH_SIZE = 8  # sequences (one response with its prompt) per forward


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


def _effective_dtype(model_cfg: Any, device: str) -> str:
    """The dtype load_model_and_tokenizer gives the weights: the preset's, fp32 on CPU."""
    return "float32" if device == "cpu" else str(model_cfg.get("dtype", "float32"))


def _load_tokenizer(baseline: Baseline, where: str) -> Any:
    """The tokenizer as load_model_and_tokenizer sets it up, without loading the weights (a cache hit needs none)."""
    from transformers import AutoTokenizer

    kwargs = {"revision": baseline.model_cfg.get("revision")} if not baseline.model_cfg.get("builtin") else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(baseline.path, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PrefrunError(f"{where} ({baseline.path}): cannot load its tokenizer: {first}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if baseline.model_cfg.get("chat_template"):
        tokenizer.chat_template = baseline.model_cfg.chat_template
    return tokenizer


def mean_response_logps(model: Any, rows: list[dict], device: Any, batch_size: int = BATCH_SIZE) -> list[list[float]]:
    """Per-token mean log-prob of every response of ``rows`` (tokenize_record output) under ``model``.

    Sequences prompt + response, right-padded, longest first; fp32 log-softmax under no_grad. The first
    token of a sequence has no prediction, so a prompt-less response is scored from its second token.
    """
    import torch

    seqs = [
        (i, k, list(row["prompt_ids"]) + list(resp), len(row["prompt_ids"]))
        for i, row in enumerate(rows)
        for k, resp in enumerate(row["response_ids"])
    ]
    seqs.sort(key=lambda s: -len(s[2]))
    out = [[0.0] * len(row["response_ids"]) for row in rows]
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            width = len(chunk[0][2])
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            attention = torch.zeros(len(chunk), width, dtype=torch.long)
            scored = torch.zeros(len(chunk), width - 1, dtype=torch.bool)  # position t predicts token t + 1
            for r, (_, _, seq, prompt_len) in enumerate(chunk):
                ids[r, : len(seq)] = torch.tensor(seq)
                attention[r, : len(seq)] = 1
                scored[r, max(prompt_len, 1) - 1 : len(seq) - 1] = True
            ids, attention, scored = ids.to(device), attention.to(device), scored.to(device)
            logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
            token_logps = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)
            sums = (token_logps * scored).sum(-1)
            counts = scored.sum(-1)
            for r, (i, k, _, _) in enumerate(chunk):
                if counts[r] == 0:
                    raise PrefrunError(f"record {i} response {k}: no token to score; raise train.max_response_len")
                out[i][k] = (sums[r] / counts[r]).item()
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
        dtype = _effective_dtype(baseline.model_cfg, device)
        cache = ReferenceCache(
            Path(cache_dir) / "baselines",
            model_fingerprint(baseline.path, baseline.model_cfg.get("revision")),
            tokenizer_fingerprint(tokenizer),
            f"baseline_mean_logps,{dtype},max_prompt_len={max_prompt_len},max_response_len={max_response_len}",
        )
        # The cache keys on a datasets.Dataset of the scored columns, as the reference cache does in training.
        table = Dataset.from_dict({c: [row[c] for row in rows] for c in ("prompt_ids", "response_ids")})
        values = cache.load(table)
        if values is None:
            model = load_model_and_tokenizer(baseline.path, baseline.model_cfg, device)[0]
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
