"""A round's samples → the records an objective trains on; what carries no preference is dropped and counted.

A round row (one prompt): ``prompt_ids``, ``token_ids[K]``, ``scores[K]`` (None: unscorable), ``old_logps[K]``
and ``ref_logps[K]`` (summed log-probs of the sampling policy and of the reference), and ``prefs[K][K]`` when the
objective takes the reward source's preference probabilities (iREPO's ``p_chosen``: P(w ≻ l) of each pair, e.g.
the share of M annotators' votes). Unscorable samples leave the list first. Then, by ``online.pairs``:

    best_worst   the first best sample against the first worst one      (one pair per prompt)
    all          every two samples, the better one first               (up to K(K−1)/2 pairs per prompt)
    list         the list itself, for list objectives                  (one list per prompt)

A pair is never a tie and never one response twice (equal token ids): a tied pair holds no preference, and
training it as "first beats second" (as TRL's OnlineDPOTrainer does: ``first_half >= second_half``) trains
on noise. A prompt that yields no record counts as tied, or as unscored when none of its samples scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prefrun.data.pairs import PAIR_MODES
from prefrun.errors import PrefrunError

PAIR_SHAPES = ("best_worst", "all")
SHAPES = (*PAIR_SHAPES, "list")


@dataclass
class ShapeCounts:
    """What shaping saw: prompts, the prompts whose samples all failed to score, those tied, records made."""

    prompts: int = 0
    unscored: int = 0  # prompts none of whose samples scored
    tied: int = 0  # prompts with scored samples but no record (all tied, or one scored sample)
    records: int = 0

    def add(self, other: ShapeCounts) -> None:
        for name in ("prompts", "unscored", "tied", "records"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def resolve_shape(pairs: str, data: str) -> str:
    """``online.pairs`` for an objective of data shape ``data``: auto = best_worst (pairwise), list (list)."""
    if pairs == "auto":
        return "best_worst" if data == "pairwise" else "list"
    if pairs not in SHAPES:
        raise PrefrunError(f"online.pairs={pairs!r} is unknown; use one of auto, {', '.join(SHAPES)}")
    if data == "pairwise" and pairs == "list":
        raise PrefrunError(
            "online.pairs=list gives whole lists, and a pairwise objective trains on pairs: use online.pairs="
            "best_worst or all, or a list objective (objective=lipo)"
        )
    return pairs


def _scored(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def shape_row(row: dict[str, Any], shape: str, *, with_reference: bool, min_k: int = 2) -> tuple[list[dict], str]:
    """The records of one prompt and what became of it: "ok", "tied" or "unscored"."""
    keep = [k for k, s in enumerate(row["scores"]) if _scored(s)]
    if not keep:
        return [], "unscored"
    scores = [row["scores"][k] for k in keep]
    if shape == "list":
        groups = [tuple(keep)] if len(keep) >= min_k and max(scores) > min(scores) else []
    else:
        pairs = [(keep[w], keep[lo]) for w, lo in PAIR_MODES[shape](scores) if scores[w] > scores[lo]]
        groups = [(w, lo) for w, lo in pairs if row["token_ids"][w] != row["token_ids"][lo]]
    fields = ("scores", "old_logps", "ref_logps") if with_reference else ("scores", "old_logps")
    records = [
        {
            "prompt_ids": list(row["prompt_ids"]),
            "response_ids": [list(row["token_ids"][k]) for k in group],
            **{name: [float(row[name][k]) for k in group] for name in fields},
            **({"p_chosen": float(row["prefs"][group[0]][group[1]])} if "prefs" in row and shape != "list" else {}),
        }
        for group in groups
    ]
    return records, "ok" if records else "tied"


def shape_rows(
    rows: list[dict[str, Any]], shape: str, *, with_reference: bool, min_k: int = 2
) -> tuple[list[dict], ShapeCounts]:
    """The records of ``rows`` (in order) and the counts of what was dropped."""
    counts = ShapeCounts(prompts=len(rows))
    records: list[dict] = []
    for row in rows:
        made, outcome = shape_row(row, shape, with_reference=with_reference, min_k=min_k)
        records.extend(made)
        counts.unscored += outcome == "unscored"
        counts.tied += outcome == "tied"
    counts.records = len(records)
    return records, counts
