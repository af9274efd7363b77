"""Reshape scored lists: K responses into pairs (K = 2) or into unpaired feedback (K = 1 with a label).

    record = {"prompt": "p", "responses": ["a", "b", "c"], "scores": [2.0, 0.0, 1.0]}

    to_pairs([record], "best_worst")  -> ([{"prompt": "p", "responses": ["a", "b"], "scores": [2.0, 0.0]}], 0)
    to_unpaired([record], "top_bottom")
    -> ([{"prompt": "p", "responses": ["a"], "scores": [2.0], "labels": [True]},
         {"prompt": "p", "responses": ["b"], "scores": [0.0], "labels": [False]}], 0)

Each returns the new records and the number of input records that yielded none (for the caller to log).
A pair is never a tie: tied responses are not paired, so a list whose scores are all equal yields none.
``drop_identical`` removes records whose responses are all the same text to the same prompt (a pair whose
chosen equals its rejected): they carry no preference, whatever their scores say.
Keys other than responses, scores, labels and prompts (prompt, user, ...) are copied to every output
record; per-response prompts (joint preferences) follow their responses.

``joint_pairs`` builds DOVE's joint preferences across prompts: (x_i, y) against (x_j, y').
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from prefrun.data.records import Record, prompts_of
from prefrun.errors import PrefrunError


def _best_worst(scores: list[float]) -> list[tuple[int, int]]:
    """The first best response against the first worst one."""
    best, worst = scores.index(max(scores)), scores.index(min(scores))
    return [(best, worst)]


def _all(scores: list[float]) -> list[tuple[int, int]]:
    """Every two responses, the better one first, in the order (i, j) with i < j."""
    k = len(scores)
    return [(i, j) if scores[i] > scores[j] else (j, i) for i in range(k) for j in range(i + 1, k)]


def _adjacent(scores: list[float]) -> list[tuple[int, int]]:
    """Each response against every response one score level below it (consecutive in sorted order)."""
    levels = sorted(set(scores), reverse=True)
    return [
        (i, j)
        for high, low in zip(levels, levels[1:])
        for i in range(len(scores))
        if scores[i] == high
        for j in range(len(scores))
        if scores[j] == low
    ]


def _best_vs_rest(scores: list[float]) -> list[tuple[int, int]]:
    """The first best response against each response scored lower."""
    best = scores.index(max(scores))
    return [(best, j) for j in range(len(scores)) if j != best]


PAIR_MODES: dict[str, Callable[[list[float]], list[tuple[int, int]]]] = {
    "best_worst": _best_worst,
    "all": _all,
    "adjacent": _adjacent,
    "best_vs_rest": _best_vs_rest,
}
UNPAIRED_MODES = ("threshold", "top_bottom")


def _base(record: Record) -> Record:
    return {key: value for key, value in record.items() if key not in ("responses", "scores", "labels", "prompts")}


def _picked(record: Record, indices: tuple[int, ...]) -> Record:
    """The record's responses at ``indices`` (with their scores, and their own prompts if it has them)."""
    out = {**_base(record), "responses": [record["responses"][i] for i in indices]}
    out["scores"] = [record["scores"][i] for i in indices]
    if "prompts" in record:
        out["prompts"] = [record["prompts"][i] for i in indices]
        out["prompt"] = out["prompts"][0]
    return out


def identical(record: Record) -> bool:
    """Whether a record of K ≥ 2 responses holds one text K times, to one prompt (chosen = rejected for a pair)."""
    responses, prompts = record["responses"], prompts_of(record)
    return len(responses) > 1 and all(r == responses[0] for r in responses) and all(p == prompts[0] for p in prompts)


def drop_identical(records: list[Record]) -> tuple[list[Record], int]:
    """The records that are not ``identical``, and how many were dropped.

    >>> drop_identical([{"prompt": "p", "responses": ["a", "a"], "scores": [1.0, 0.0]}])
    ([], 1)
    """
    kept = [r for r in records if not identical(r)]
    return kept, len(records) - len(kept)


def to_pairs(records: Iterable[Record], mode: str) -> tuple[list[Record], int]:
    """Pairs [chosen, rejected] with scores [s_w, s_l], s_w > s_l, and the number of records with none.

    mode: best_worst (one pair per list), all (every untied pair), adjacent (consecutive score levels),
    best_vs_rest (the best against each lower one). With scores [3, 2, 2, 1] (responses a, b, c, d):

        best_worst   (a, d)
        all          (a, b) (a, c) (a, d) (b, d) (c, d)
        adjacent     (a, b) (a, c) (b, d) (c, d)
        best_vs_rest (a, b) (a, c) (a, d)
    """
    if mode not in PAIR_MODES:
        raise PrefrunError(f"pair mode {mode!r} is unknown; use one of {', '.join(PAIR_MODES)}")
    pairs: list[Record] = []
    dropped = 0
    for record in records:
        scores = record["scores"]
        found = [(w, lo) for w, lo in PAIR_MODES[mode](scores) if scores[w] > scores[lo]]
        dropped += not found
        pairs.extend(_picked(record, (w, lo)) for w, lo in found)
    return pairs, dropped


def joint_pairs(records: list[Record], n: int, seed: int) -> list[Record]:
    """``n`` joint preferences (DOVE, Bansal et al. 2024): (x_i, y_i) against (x_j, y_j) with i ≠ j.

    Two records are drawn at random and one response of each; the higher-scored (prompt, response) is
    chosen and ties are skipped. It needs scores on one scale across prompts (ratings, an oracle
    reward), not per-list ranks. Each pair carries ``prompts`` = [x_w, x_l].
    """
    if len(records) < 2:
        raise PrefrunError("joint pairs need at least 2 prompts")
    rng = random.Random(seed)
    out: list[Record] = []
    for _ in range(20 * n):  # ties are skipped; bounded so all-tied data cannot loop forever
        if len(out) == n:
            break
        i, j = rng.sample(range(len(records)), 2)
        a, b = rng.randrange(len(records[i]["responses"])), rng.randrange(len(records[j]["responses"]))
        sa, sb = records[i]["scores"][a], records[j]["scores"][b]
        if sa == sb:
            continue
        (w, iw), (lo, il) = ((records[i], a), (records[j], b)) if sa > sb else ((records[j], b), (records[i], a))
        prompts = [prompts_of(w)[iw], prompts_of(lo)[il]]
        out.append(
            {
                "prompt": prompts[0],
                "prompts": prompts,
                "responses": [w["responses"][iw], lo["responses"][il]],
                "scores": [w["scores"][iw], lo["scores"][il]],
            }
        )
    return out


def to_unpaired(records: Iterable[Record], mode: str, threshold: float | None = None) -> tuple[list[Record], int]:
    """Records of one response with labels [bool], and the number of input records that gave none.

    threshold: every response, labelled score >= threshold (threshold is required).
    top_bottom: the first best response labelled True and the first worst False; a list whose scores
    are all equal gives none. Scores [3, 2, 1] with threshold 2 -> labels True, True, False;
    with top_bottom -> 3: True, 1: False.
    """
    if mode not in UNPAIRED_MODES:
        raise PrefrunError(f"unpaired mode {mode!r} is unknown; use one of {', '.join(UNPAIRED_MODES)}")
    if mode == "threshold" and threshold is None:
        raise PrefrunError("unpaired mode 'threshold' needs a threshold (label = score >= threshold)")
    out: list[Record] = []
    dropped = 0
    for record in records:
        scores = record["scores"]
        if mode == "threshold":
            chosen = [(i, scores[i] >= threshold) for i in range(len(scores))]
        elif max(scores) > min(scores):
            chosen = [(scores.index(max(scores)), True), (scores.index(min(scores)), False)]
        else:
            chosen = []
        dropped += not chosen
        out.extend({**_picked(record, (i,)), "labels": [label]} for i, label in chosen)
    return out, dropped
