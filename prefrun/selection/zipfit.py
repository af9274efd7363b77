"""ZIP-FIT: keep the records whose text compresses best together with a target set.

Obbad et al., "ZIP-FIT: Embedding-Free Data Selection via Compression-Based Alignment" (arXiv 2410.18194),
Sec. 3: score each candidate x by

    Alignment(x) = 1 − (1/n) Σ_j NCD(x, t_j)        (NCD: prefrun/selection/ncd.py)

over the n target examples t_j and keep the top K (``k``) or the top fraction (``fraction``); ties keep
the earlier record. A record's text is ``text=prompt`` or ``text=prompt_response`` (prompt, newline,
chosen response: see pool.py), the same rule for candidates and targets.

The target (``target=``) is

- a dataset preset name (``target=sort``): its records as ``dataset=<name>`` loads them, the train
  split or, with ``target_split=eval``, its held-out records;
- a file (.jsonl/.json/.parquet/.csv) of rows in prefrun's record shape: a ``prompt`` (text or chat
  messages) and, for ``text=prompt_response``, ``responses`` (and optionally ``scores``, which pick the
  chosen response; without them the first response is used).

``max_targets`` keeps the first n targets (the cost is one compression per candidate–target pair).
Refused: an empty target set, a budget above the pool's size (pool.py), a target whose prompts are of
another kind (chat vs plain text) than the pool's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefrun.data.records import Record, records_fingerprint
from prefrun.errors import PrefrunError
from prefrun.selection.ncd import DEFAULT_LEVEL, check_level, zipfit_alignment
from prefrun.selection.pool import budget, check_budget, check_same_shape, check_text_mode, record_text
from prefrun.selection.steps import SELECTION_STEPS, Selection, SelectionContext

TARGET_SPLITS = ("train", "eval")


@SELECTION_STEPS.register("zipfit")
class ZipFit:
    version = 1
    cache_exempt = ("processes",)  # how many cores score the pool changes the time, not the choice

    def __init__(
        self,
        *,
        target: str | None = None,
        target_split: str = "train",
        max_targets: int | None = None,
        k: int | None = None,
        fraction: float | None = None,
        level: int = DEFAULT_LEVEL,
        text: str = "prompt_response",
        processes: int | None = None,
    ) -> None:
        check_level(level)
        check_text_mode(text)
        if target_split not in TARGET_SPLITS:
            raise PrefrunError(f"data.select.target_split={target_split!r} must be one of {', '.join(TARGET_SPLITS)}")
        if max_targets is not None and (
            isinstance(max_targets, bool) or not isinstance(max_targets, int) or max_targets < 1
        ):
            raise PrefrunError(f"data.select.max_targets={max_targets!r} must be a positive integer or null")
        check_budget(k, fraction)
        self.target, self.target_split, self.max_targets = target, target_split, max_targets
        self.k, self.fraction, self.level, self.text, self.processes = k, fraction, level, text, processes
        self._targets: list[Record] | None = None

    def targets(self) -> list[Record]:
        """The target records (loaded once)."""
        if self._targets is None:
            records = load_target(self.target, self.target_split)
            if self.max_targets is not None:
                records = records[: self.max_targets]
            if not records:
                raise PrefrunError(f"data.select.target={self.target}: the target set is empty")
            self._targets = records
        return self._targets

    def fingerprints(self, records: Sequence[Record], ctx: SelectionContext) -> dict[str, str]:
        return {"target": records_fingerprint(self.targets())}

    def select(self, records: Sequence[Record], ctx: SelectionContext) -> Selection:
        targets = self.targets()
        check_same_shape(records, targets, str(self.target))
        n_keep = budget(len(records), self.k, self.fraction)
        scores = zipfit_alignment(
            [record_text(r, self.text) for r in records],
            [record_text(t, self.text) for t in targets],
            level=self.level,
            processes=self.processes,
        )
        order = sorted(range(len(records)), key=lambda i: (-scores[i], i))
        kept, dropped = order[:n_keep], order[n_keep:]
        return Selection(
            indices=sorted(kept),
            details={
                "targets": len(targets),
                "alignment_kept_mean": _mean([scores[i] for i in kept]),
                "alignment_dropped_mean": _mean([scores[i] for i in dropped]),
                "alignment_threshold": scores[kept[-1]],
            },
        )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def load_target(target: str | None, split: str = "train") -> list[Record]:
    """The target records: a dataset preset's (train or eval split), or a file's rows (module docstring)."""
    if not target:
        raise PrefrunError(
            "data.select.target is not set; name a dataset preset (data.select.target=sort) or a file "
            "(data.select.target=targets.jsonl)"
        )
    from prefrun.data.reading import READERS

    path = Path(str(target)).expanduser()
    if path.suffix.lower() in READERS or path.exists() or "/" in str(target):
        return _file_target(path)
    presets = _dataset_presets()
    if target not in presets:
        raise PrefrunError(
            f"data.select.target={target!r} is neither a file nor a dataset preset; presets: {', '.join(presets)}"
        )
    return _preset_target(str(target), split)


def _file_target(path: Path) -> list[Record]:
    from prefrun.data.reading import read_rows

    out = []
    for where, row in read_rows(path):
        if not isinstance(row, dict) or "prompt" not in row:
            raise PrefrunError(f"data.select.target {path}{where}: each row needs a 'prompt' field")
        responses = row.get("responses") or []
        if not isinstance(responses, list):
            raise PrefrunError(f"data.select.target {path}{where}: 'responses' must be a list of texts")
        scores = row.get("scores") or [0.0] * len(responses)
        out.append({"prompt": row["prompt"], "responses": responses, "scores": scores})
    return out


def _dataset_presets() -> list[str]:
    from prefrun.config import CONF_DIR

    return sorted(p.stem for p in (Path(CONF_DIR) / "dataset").glob("*.yaml") if not p.stem.startswith("_"))


def _preset_target(name: str, split: str) -> list[Record]:
    from prefrun.data.sources import build_data
    from prefrun.models.presets import _compose

    dataset_cfg: Any = _compose([f"dataset={name}"]).dataset
    data = build_data(dataset_cfg, seed=0)
    return list(data.train if split == "train" else data.eval_records)
