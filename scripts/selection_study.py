#!/usr/bin/env python
"""Selection steps on the sort testbed, without training: ZIP-FIT precision and Deita's duplicate rate.

    python scripts/selection_study.py                 # 3 seeds, about a minute on one core
    python scripts/selection_study.py --seeds 0 --pool 200

ZIP-FIT: a pool of sort prompts (the testbed's generator) mixed with as many off-task strings of about the
same length (prose, arithmetic, code; or, with the "hard" pool, other list tasks: "reverse: ... ->",
"max: ... ->"), a target of held-out sort prompts. precision@K = share of sort prompts among the K kept
(K = the number of sort prompts in the pool, and K = 50) for zlib level 9, level 0 (the zip-fit package's
default, which the step refuses: computed here with the unchecked helper) and a random K.

Deita: a pool of sort preference records plus as many near-duplicates (a record's numbers in another order:
the same sorted answer); a 20% selection by Deita (sort_items × oracle, hashed bag-of-tokens embedding,
τ = 0.9) vs a random 20%. duplicate rate = 1 − distinct number sets / records kept.

Cost: candidates/s of each step through ``apply_selection`` (one process; records fingerprint included),
and the second call's time (a cache hit). ZIP-FIT's cost is one zlib call per candidate–target pair.
Prints markdown tables: mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import zlib
from pathlib import Path

from prefrun.data import synthetic
from prefrun.data.records import make_record
from prefrun.selection import deita, zipfit  # noqa: F401 - imported up front: the timings exclude imports
from prefrun.selection.ncd import _alignments, zipfit_alignment
from prefrun.selection.steps import apply_selection

WORDS = (
    "the a of river mill letter drawer weather valley old slow read folded put ran mild past she it was and "
    "in on under green quiet window bread table city night"
).split()


def off_task(rng: random.Random, hard: bool) -> str:
    """An off-task string about as long as a sort prompt (20–35 characters)."""
    numbers = [str(n) for n in rng.sample(range(30), rng.randint(5, 8))]
    if hard:
        return " ".join([rng.choice(["reverse:", "max:"]), *numbers, "->"])
    family = rng.randrange(3)
    if family == 0:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 8)))
    if family == 1:
        return " + ".join(numbers[:4]) + " ="
    return f"x = {numbers[0]}; y = x * {numbers[1]}; print(y)"


def precision(kept: list[int], n_on_task: int) -> float:
    return sum(i < n_on_task for i in kept) / len(kept)


def top(scores: list[float], k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def zipfit_seed(seed: int, pool_size: int, n_targets: int, hard: bool) -> dict[str, float]:
    task = synthetic.SortTask()
    rng = random.Random(seed)
    on_task = synthetic.eval_prompts(task, pool_size, seed=1000 + seed)
    pool = on_task + [off_task(rng, hard) for _ in range(pool_size)]
    targets = synthetic.eval_prompts(task, n_targets, seed=2000 + seed)  # held out: another seed stream
    level9 = zipfit_alignment(pool, targets, level=9, processes=1)
    target_bytes = [t.encode() for t in targets]
    level0 = _alignments(pool, target_bytes, [len(zlib.compress(t, 0)) for t in target_bytes], 0)
    out = {}
    for k in (pool_size, 50):
        out[f"level 9 @{k}"] = precision(top(level9, k), pool_size)
        out[f"level 0 @{k}"] = precision(top(level0, k), pool_size)
        out[f"random @{k}"] = precision(rng.sample(range(len(pool)), k), pool_size)
    return out


def near_duplicate(record: dict, rng: random.Random) -> dict:
    numbers = synthetic.parse_prompt(record["prompt"])
    rng.shuffle(numbers)
    prompt = synthetic.format_prompt(numbers)
    return make_record(prompt, record["responses"], [synthetic.oracle_reward(prompt, r) for r in record["responses"]])


def duplicate_rate(pool: list[dict], kept: list[int]) -> float:
    sets = {frozenset(synthetic.parse_prompt(pool[i]["prompt"])) for i in kept}
    return 1 - len(sets) / len(kept)


def deita_seed(seed: int, pool_size: int, cache_dir: str) -> dict[str, float]:
    rng = random.Random(seed)
    base = synthetic.preference_records(synthetic.SortTask(), pool_size, 4, 6, 0.2, seed=3000 + seed)
    pool = base + [near_duplicate(rng.choice(base), rng) for _ in range(pool_size)]
    step = {"name": "deita", "fraction": 0.2, "complexity": "sort_items", "quality": "oracle"}
    start = time.perf_counter()
    kept, report = apply_selection(pool, step, cache_dir, reward_fn=synthetic.oracle_reward)
    seconds = time.perf_counter() - start
    _, again = apply_selection(pool, step, cache_dir, reward_fn=synthetic.oracle_reward)
    assert again["cache_hit"]
    chosen = json.loads(Path(report["cache_file"]).read_text())["indices"]
    n = len(kept)
    return {
        "deita dup rate": duplicate_rate(pool, chosen),
        "random dup rate": duplicate_rate(pool, rng.sample(range(len(pool)), n)),
        "pool dup rate": duplicate_rate(pool, list(range(len(pool)))),
        "deita candidates/s": len(pool) / seconds,
        "cache hit s": again["seconds"],
    }


def zipfit_cost(pool_size: int, n_targets: int, cache_dir: str) -> dict[str, float]:
    task = synthetic.SortTask()
    pool = synthetic.preference_records(task, pool_size, 2, 2, 0.0, seed=4000)
    target = Path(cache_dir) / "targets.jsonl"
    targets = synthetic.preference_records(task, n_targets, 2, 2, 0.0, seed=5000)
    target.write_text("".join(json.dumps(r) + "\n" for r in targets))
    step = {"name": "zipfit", "target": str(target), "fraction": 0.2, "processes": 1}
    start = time.perf_counter()
    apply_selection(pool, step, cache_dir)
    seconds = time.perf_counter() - start
    _, again = apply_selection(pool, step, cache_dir)
    texts = [f"{r['prompt']}\n{r['responses'][0]}" for r in pool]
    start = time.perf_counter()
    zipfit_alignment(texts, [f"{t['prompt']}\n{t['responses'][0]}" for t in targets], processes=2, min_parallel_pairs=1)
    parallel = time.perf_counter() - start
    return {
        "zipfit candidates/s": pool_size / seconds,
        "zipfit alignment candidates/s, 2 processes": pool_size / parallel,
        "zipfit cache hit s": again["seconds"],
    }


def row(name: str, values: list[float], digits: int = 3) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"| {name} | {mean:.{digits}f} ± {std:.{digits}f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pool", type=int, default=500, help="sort prompts in the pool (as many off-task)")
    parser.add_argument("--targets", type=int, default=100, help="held-out sort prompts in the target set")
    args = parser.parse_args()
    for hard in (False, True):
        runs = [zipfit_seed(s, args.pool, args.targets, hard) for s in args.seeds]
        kind = "other list tasks (reverse:, max:)" if hard else "prose, arithmetic, code"
        print(
            f"\n### ZIP-FIT precision@K: {args.pool} sort prompts + {args.pool} off-task ({kind}), "
            f"{args.targets} held-out sort targets, {len(args.seeds)} seeds\n"
        )
        print("| selection | precision |\n|---|---|")
        for key in runs[0]:
            print(row(key, [r[key] for r in runs]))
    with tempfile.TemporaryDirectory() as cache_dir:
        runs = [deita_seed(s, args.pool, cache_dir) for s in args.seeds]
        print(
            f"\n### Deita: {args.pool} sort records + {args.pool} near-duplicates, 20% kept, {len(args.seeds)} seeds\n"
        )
        print("| measure | value |\n|---|---|")
        for key in runs[0]:
            print(row(key, [r[key] for r in runs], 4 if "s" == key.split()[-1] else 3))
        cost = zipfit_cost(2 * args.pool, args.targets, cache_dir)
        print(f"\n### ZIP-FIT cost: {2 * args.pool} candidates × {args.targets} targets, one process unless noted\n")
        print("| measure | value |\n|---|---|")
        for key, value in cost.items():
            print(f"| {key} | {value:.4g} |")


if __name__ == "__main__":
    main()
