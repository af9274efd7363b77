"""Running a data selection step, cached under the content hash of its inputs.

    records, report = apply_selection(data.train, cfg.data.select, cfg.paths.cache_dir, reward_fn=data.reward_fn)

The step is ``data.select.name`` in ``SELECTION_STEPS``; the other keys of ``data.select`` are its
parameters. The cache key hashes the records (their content, so two datasets that load the same records
share it), the step's name, version and parameters (``cache_exempt`` ones, such as a process count, left
out: they change the cost, not the choice) and the fingerprints of anything else it reads (a target set,
an embedding model). The chosen indices go to ``<cache_dir>/selection/<key>.json`` (written to a temporary
file, then renamed), so every run of a sweep that asks for the same step finds them. A step keeps its
records in the dataset's order: selection says which records, training decides their order.

The report (one entry of ``data_steps.json``):

    {"step": "zipfit", "params": {...}, "inputs": {"records": "<sha256>", "target": "<sha256>"},
     "counts": {"in": 6400, "kept": 640, "dropped": 5760}, "seconds": 0.01, "computed_seconds": 31.2,
     "cache_hit": true, "cache_file": ".../selection/<key>.json", "details": {...}}
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefrun.data.records import Record, records_fingerprint
from prefrun.errors import PrefrunError
from prefrun.registry import Registry

log = logging.getLogger("prefrun")

SELECTION_STEPS = Registry(
    "data selection step",
    modules=("prefrun.selection.zipfit", "prefrun.selection.deita", "prefrun.selection.random_subset"),
    config_key="data.select",
)


@dataclass
class SelectionContext:
    """What a step may need beyond its parameters: the dataset's oracle (synthetic tasks), the tiny
    tokenizer's words, the device for a model embedder, the cache directory."""

    reward_fn: Callable[[str, str], float] | None = None
    words: Sequence[str] = ()
    device: str = "cpu"
    cache_dir: str = ".cache"


@dataclass
class Selection:
    """A step's choice: the kept records' indices (in the dataset's order) and step-specific figures."""

    indices: list[int]
    details: dict[str, Any] = field(default_factory=dict)


@SELECTION_STEPS.register("none")
class NoSelection:
    """Every record, unchanged (the default)."""

    version = 1
    cache_exempt: tuple[str, ...] = ()

    def fingerprints(self, records: Sequence[Record], ctx: SelectionContext) -> dict[str, str]:
        return {}

    def select(self, records: Sequence[Record], ctx: SelectionContext) -> Selection:
        return Selection(list(range(len(records))))


def _plain(step_cfg: Any) -> dict[str, Any]:
    if step_cfg is None:
        return {"name": "none"}
    if not isinstance(step_cfg, Mapping):
        from omegaconf import OmegaConf

        step_cfg = OmegaConf.to_container(step_cfg, resolve=True)
    return dict(step_cfg)


def build_step(step_cfg: Any) -> tuple[str, Any, dict[str, Any]]:
    """(name, step, all its parameters) from ``data.select``; an unknown parameter is a one-line error."""
    params = _plain(step_cfg)
    name = params.pop("name", None)
    if not name:
        raise PrefrunError("data.select has no name; choose a step: data.select=none|zipfit|deita")
    cls = SELECTION_STEPS.get(name)
    signature = inspect.signature(cls).parameters
    unknown = sorted(set(params) - set(signature))
    if unknown:
        raise PrefrunError(
            f"data.select.{unknown[0]} is not a parameter of data.select={name}; its parameters: "
            f"{', '.join(signature) or 'none'}"
        )
    step = cls(**params)
    # Every parameter, defaults included: the report says what ran, and the cache key changes with a default.
    full = {p: params.get(p, signature[p].default) for p in signature}
    return name, step, full


def apply_selection(
    records: Sequence[Record],
    step_cfg: Any,
    cache_dir: str | os.PathLike,
    *,
    reward_fn: Callable[[str, str], float] | None = None,
    words: Sequence[str] = (),
    device: str = "cpu",
) -> tuple[list[Record], dict[str, Any]]:
    """The records ``data.select`` keeps and its report (see the module docstring); cached by content."""
    start = time.perf_counter()
    name, step, params = build_step(step_cfg)
    records = list(records)
    if name == "none":
        counts = {"in": len(records), "kept": len(records), "dropped": 0}
        return records, {"step": "none", "params": {}, "counts": counts, "cache_hit": False, "seconds": 0.0}
    ctx = SelectionContext(reward_fn=reward_fn, words=tuple(words), device=device, cache_dir=str(cache_dir))
    inputs = {"records": records_fingerprint(records), **step.fingerprints(records, ctx)}
    keyed = {k: v for k, v in sorted(params.items()) if k not in step.cache_exempt}
    blob = {"step": name, "version": step.version, "params": keyed, "inputs": inputs}
    key = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = Path(cache_dir) / "selection" / f"{key}.json"
    cached = _read_cache(path, len(records))
    if cached is not None:
        indices, details, computed = cached["indices"], cached["details"], cached["seconds"]
    else:
        selection = step.select(records, ctx)
        indices, details = sorted(selection.indices), selection.details
        computed = time.perf_counter() - start
        _write_cache(path, {**blob, "n": len(records), "indices": indices, "details": details, "seconds": computed})
    kept = [records[i] for i in indices]
    report = {
        "step": name,
        "params": params,
        "inputs": inputs,
        "counts": {"in": len(records), "kept": len(kept), "dropped": len(records) - len(kept)},
        "seconds": round(time.perf_counter() - start, 4),
        "computed_seconds": round(computed, 4),
        "cache_hit": cached is not None,
        "cache_file": str(path),
        "details": details,
    }
    log.info(
        "data.select=%s kept %d of %d records (%s)", name, len(kept), len(records), "cached" if cached else "computed"
    )
    return kept, report


def _read_cache(path: Path, n: int) -> dict[str, Any] | None:
    """The cached choice, or None when absent or unusable (then it is recomputed and rewritten)."""
    try:
        blob = json.loads(path.read_text())
        indices = blob["indices"]
        if blob["n"] != n or not all(isinstance(i, int) and 0 <= i < n for i in indices):
            raise ValueError("indices do not fit the records")
        return blob
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("data.select: ignoring the unreadable cache file %s (%s); recomputing", path, e)
        return None


def _write_cache(path: Path, blob: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(blob, sort_keys=True, default=str))
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one, never half of one
