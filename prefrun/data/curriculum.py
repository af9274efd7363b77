"""Curry-DPO curricula (Pattnaik et al. 2024, arXiv 2403.07230): pairs ordered easy → hard by score gap.

From each list, the best response is paired with every other one (chosen = best, ties dropped). The
pair with the largest score gap of a prompt is its easiest. Pairs are bucketed by that per-prompt
rank (bucket 0: every prompt's easiest pair, bucket 1: the next, ...), the buckets are merged into
``stages`` sets of consecutive buckets, and each set is shuffled within itself only, never across:

    lists with 4 responses, stages = 3  ->  [(R1,R4) pairs] [(R1,R3) pairs] [(R1,R2) pairs]

Non-iterative training runs one pass over the concatenated sets with a sequential sampler;
iterative training runs stage i on set i, from stage i−1's policy, which is also its reference.
"""

from __future__ import annotations

import random

from prefrun.data.records import Record


def gap_buckets(records: list[Record]) -> list[list[Record]]:
    """Pairs (best, other) of every list, bucketed by the per-prompt rank of their score gap (largest first)."""
    buckets: list[list[Record]] = []
    for record in records:
        scores = record["scores"]
        best = max(range(len(scores)), key=lambda i: scores[i])
        others = [j for j in range(len(scores)) if scores[j] < scores[best]]
        others.sort(key=lambda j: scores[best] - scores[j], reverse=True)
        base = {k: v for k, v in record.items() if k not in ("responses", "scores", "labels")}
        for rank, j in enumerate(others):
            if rank == len(buckets):
                buckets.append([])
            pair = {
                **base,
                "responses": [record["responses"][best], record["responses"][j]],
                "scores": [scores[best], scores[j]],
            }
            buckets[rank].append(pair)
    return buckets


def curriculum_stages(records: list[Record], stages: int | None, seed: int) -> list[list[Record]]:
    """``stages`` pair sets (None: one per gap bucket), easiest first, each shuffled within itself with ``seed``."""
    buckets = gap_buckets(records)
    if not buckets:
        return []
    stages = len(buckets) if stages is None else min(stages, len(buckets))
    # Consecutive buckets per stage, as even as possible: 7 buckets in 3 stages -> 3, 2, 2.
    sizes = [len(buckets) // stages + (i < len(buckets) % stages) for i in range(stages)]
    rng = random.Random(seed)
    out, start = [], 0
    for size in sizes:
        pairs = [pair for bucket in buckets[start : start + size] for pair in bucket]
        rng.shuffle(pairs)
        out.append(pairs)
        start += size
    return out
