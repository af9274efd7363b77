#!/usr/bin/env python
"""Bench rows 6 and 7, reward models: prefrun's RewardModelTrainer against TRL's RewardTrainer, side by side.

    python scripts/bench_reward_model.py                # both rows, full sizes, 3 repeats
    python scripts/bench_reward_model.py --quick        # smoke-test sizes
    python scripts/bench.py --rows rm_pairs,rm_lists    # the same rows inside make bench

Row 6 (``rm_pairs``): ``bt`` on pairs with a 64-token prompt and two 64-token responses. prefrun packs the
prompt once per pair (``train.shared_prompt=auto`` decides so here); TRL's RewardTrainer runs prompt + chosen
and prompt + rejected as two rows. Both see the same pairs in the same order, batch and lengths: training
data tokens/s (prompt + response per response, the same count for both), and the peak RSS of each in its own
child process (target ≥ 1.3× tokens/s, memory ≤ 1.0×).

Row 7 (``rm_lists``): ``pl_rm`` on K = 8 ranked lists (one forward over the B·K responses, the prompt packed once
per list) vs RewardTrainer on all 28 pairs of each list, the same responses per step (B·K/2 pairs): prompts/s
over one epoch of the same prompts (target ≥ 5×).

The model is bench.py's (a random-init Llama, 6 layers, hidden 256) with a one-output score head; fp32, CPU.
Within each repeat both sides run one after the other in the same process, in alternating order; medians.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench.py, when run as a script from anywhere

from bench import (  # noqa: E402, I001
    FULL,
    QUICK,
    Sizes,
    entry,
    load_tokenizer,
    median,
    model_dir,
    print_table,
    quiet,
    rss_now_mib,
    silent,
    text_records,
    timed_train,
    trl_pairs,
)

PAIR_SIZES = {"prompt_len": 64, "response_len": 64, "batch": 8}
LIST_SIZES = {"prompt_len": 32, "response_len": 32, "k": 8, "prompts": 8, "batch": 2}
QUICK_PAIR = {"prompt_len": 8, "response_len": 6, "batch": 4}
QUICK_LIST = {"prompt_len": 8, "response_len": 6, "k": 4, "prompts": 4, "batch": 2}


def rm_args(out: str, batch: int, steps: int) -> Any:
    """One RewardConfig for both sides: prefrun's builder of the run's trainer fields."""
    from prefrun.trainers.reward import reward_config
    from prefrun.trainers.settings import TrainSettings

    settings = TrainSettings(steps=steps, batch_size=batch, lr=1e-6, logging_steps=10_000)
    return reward_config(settings, out, "cpu", num_train_epochs=1, report_to=[])


def load_rm(path: Path) -> Any:
    """bench.py's causal LM as a one-output sequence classifier, its score head seeded (the same for both)."""
    from prefrun.trainers.reward import load_backbone

    model, _ = load_backbone(str(path), {"builtin": True}, "cpu", seed=0)
    return model


def prefrun_rm(path: Path, records: list[dict], objective: str, batch: int, steps: int, out: str) -> Any:
    from prefrun.data.shared_prompt import use_shared_prompt
    from prefrun.objectives import get_objective
    from prefrun.trainers.reward import RewardModelTrainer, tokenized_lists

    tokenizer = load_tokenizer(path)
    dataset = tokenized_lists(records, tokenizer, 4096, 4096)
    spec_objective = get_objective(objective)
    trainer = RewardModelTrainer(
        model=load_rm(path),
        objective=spec_objective,
        args=rm_args(out, batch, steps),
        train_dataset=dataset,
        processing_class=tokenizer,
        shared_prompt=use_shared_prompt("auto", dataset, spec_objective.spec),  # what a prefrun run decides
    )
    return silent(trainer)


def trl_rm(path: Path, pairs: list[dict], batch: int, steps: int, out: str) -> Any:
    from datasets import Dataset
    from trl import RewardTrainer

    trainer = RewardTrainer(
        model=load_rm(path),
        args=rm_args(out, batch, steps),
        train_dataset=Dataset.from_list(pairs),
        processing_class=load_tokenizer(path),
    )
    return silent(trainer)


def data_tokens_per_pair(tokenizer: Any, pair: dict) -> int:
    """Prompt + response tokens of both responses, EOS included: what either side trains on per pair."""
    prompt = len(tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"])
    chosen = len(tokenizer(pair["chosen"], add_special_tokens=False)["input_ids"]) + 1
    rejected = len(tokenizer(pair["rejected"], add_special_tokens=False)["input_ids"]) + 1
    return 2 * prompt + chosen + rejected


# --- row 6: pairs with a 64-token prompt --------------------------------------------------------------
def pair_data(s: Sizes, quick: bool) -> list[dict]:
    sz = QUICK_PAIR if quick else PAIR_SIZES
    n = sz["batch"] * (s.warmup + s.timed)
    return trl_pairs(text_records(n, 2, sz["prompt_len"], sz["response_len"], s.words, seed=6), "best")


def pair_trainer(s: Sizes, quick: bool, which: str, steps: int, out: str) -> Any:
    sz = QUICK_PAIR if quick else PAIR_SIZES
    pairs = pair_data(s, quick)
    path = model_dir(s)
    if which == "prefrun":
        records = [
            {"prompt": p["prompt"], "responses": [p["chosen"], p["rejected"]], "scores": [1.0, 0.0]} for p in pairs
        ]
        return prefrun_rm(path, records, "bt", sz["batch"], steps, out)
    return trl_rm(path, pairs, sz["batch"], steps, out)


def child_main(which: str, s: Sizes, quick: bool) -> None:
    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pair_trainer(s, quick, which, s.warmup + 1, tmp)
        before = rss_now_mib()
        trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_rss_mib": peak, "rss_before_train_mib": before}))


def peak_rss_child(which: str, quick: bool) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which] + (["--quick"] if quick else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"memory child {which} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def row_rm_pairs(s: Sizes, repeats: int, quick: bool) -> list[dict]:
    sz = QUICK_PAIR if quick else PAIR_SIZES
    pairs = pair_data(s, quick)
    tokenizer = load_tokenizer(model_dir(s))
    tokens_per_step = sum(data_tokens_per_pair(tokenizer, p) for p in pairs[: sz["batch"]])
    step_s: dict[str, list[float]] = {"prefrun": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {w: pair_trainer(s, quick, w, s.warmup + s.timed, f"{tmp}/{w}") for w in ("trl", "prefrun")}
        for r in range(repeats):
            for which in ("trl", "prefrun") if r % 2 == 0 else ("prefrun", "trl"):
                step_s[which].append(timed_train(trainers[which], s.warmup)["step_s"])
        packed = trainers["prefrun"].data_collator.__class__.__name__ == "SharedPromptCollator"
    mem = {w: [] for w in ("prefrun", "trl")}
    for r in range(repeats):
        for which in ("trl", "prefrun") if r % 2 == 0 else ("prefrun", "trl"):
            mem[which].append(peak_rss_child(which, quick))
    tps = {w: tokens_per_step / median(v) for w, v in step_s.items()}
    peak = {w: median([x["peak_rss_mib"] for x in v]) for w, v in mem.items()}
    label = f"6 rm bt pairs P={sz['prompt_len']}"
    return [
        entry(
            label,
            "train tokens/s",
            tps["prefrun"],
            tps["trl"],
            tps["prefrun"] / tps["trl"],
            ">= 1.3",
            shared_prompt=packed,
            step_s={w: median(v) for w, v in step_s.items()},
        ),
        entry(label, "peak RSS MiB", peak["prefrun"], peak["trl"], peak["prefrun"] / peak["trl"], "<= 1.0"),
    ]


# --- row 7: K = 8 lists, pl_rm vs all 28 pairs ----------------------------------------------------------
def row_rm_lists(s: Sizes, repeats: int, quick: bool) -> list[dict]:
    sz = QUICK_LIST if quick else LIST_SIZES
    records = text_records(sz["prompts"], sz["k"], sz["prompt_len"], sz["response_len"], s.words, seed=7)
    pairs = trl_pairs(records, "all")
    path = model_dir(s)
    pair_batch = sz["batch"] * sz["k"] // 2  # the same responses per step as pl_rm's B·K
    wall: dict[str, list[float]] = {"prefrun": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            "prefrun": prefrun_rm(path, records, "pl_rm", sz["batch"], -1, f"{tmp}/p"),
            "trl": trl_rm(path, pairs, pair_batch, -1, f"{tmp}/t"),
        }
        for t in trainers.values():  # warm-up steps, then whole epochs
            t.args.max_steps = s.warmup
            t.train()
            t.args.max_steps = -1
        for r in range(repeats):
            for name in ("trl", "prefrun") if r % 2 == 0 else ("prefrun", "trl"):
                wall[name].append(timed_train(trainers[name], 0)["train_s"])
    pps = {name: sz["prompts"] / median(v) for name, v in wall.items()}
    label = f"7 rm pl_rm K={sz['k']} vs all pairs"
    return [
        entry(
            label,
            "prompts/s (one epoch)",
            pps["prefrun"],
            pps["trl"],
            pps["prefrun"] / pps["trl"],
            ">= 5.0",
            pairs=len(pairs),
            epoch_s={n: median(v) for n, v in wall.items()},
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--rows", default="rm_pairs,rm_lists")
    parser.add_argument("--child", choices=("prefrun", "trl"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.child:
        child_main(args.child, sizes, args.quick)
        return 0
    quiet()
    repeats = args.repeats or (1 if args.quick else 3)
    model_dir(sizes)
    rows: list[dict] = []
    start = time.perf_counter()
    if "rm_pairs" in args.rows:
        rows += row_rm_pairs(sizes, repeats, args.quick)
    if "rm_lists" in args.rows:
        rows += row_rm_lists(sizes, repeats, args.quick)
    print_table(rows)
    print(f"\n{repeats} repeats, {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
