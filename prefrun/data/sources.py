"""Where a run's data comes from: a synthetic task (with its oracle and SFT data) or a loader.

``build_data(cfg)`` returns the train records, the held-out eval prompts, the SFT records (or None)
and, for synthetic tasks, the oracle reward and strict metrics used by evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefrun.data import synthetic
from prefrun.data.records import Record
from prefrun.errors import PrefrunError


@dataclass
class RunData:
    train: list[Record]
    eval_prompts: list[Any]
    sft: list[Record] | None = None
    words: list[str] = field(default_factory=list)  # the tiny tokenizer's whole-word tokens
    reward_fn: Callable[[str, str], float] | None = None
    strict_fns: dict[str, Callable[[str, str], bool]] = field(default_factory=dict)


EVAL_SEEDS = {"test": 999_999, "validation": 777_777}  # disjoint held-out prompt streams of synthetic tasks


def build_data(dataset_cfg: Any, seed: int, eval_split: str = "test") -> RunData:
    """The run's data; ``eval_split`` picks the held-out prompts: test, or validation for model selection."""
    if eval_split not in EVAL_SEEDS:
        raise PrefrunError(f"eval.split={eval_split!r} must be one of {', '.join(EVAL_SEEDS)}")
    data = _sort_task(dataset_cfg, EVAL_SEEDS[eval_split]) if dataset_cfg.get("synthetic") else _loaded(dataset_cfg)
    if dataset_cfg.get("shuffle_scores"):
        data.train = shuffled_scores(data.train, seed)
    return data


def shuffled_scores(records: list[Record], seed: int) -> list[Record]:
    """A control: each list's scores permuted at random, so preferences carry no signal about quality."""
    rng = random.Random(seed)
    out = []
    for record in records:
        scores = list(record["scores"])
        rng.shuffle(scores)
        out.append({**record, "scores": scores})
    return out


def _loaded(dataset_cfg: Any) -> RunData:
    """A loader's train split (records already validated by the loader). Its eval split is not read:
    without an oracle nothing samples held-out prompts, and for a hub dataset it would be a second download."""
    from prefrun.data.loaders import load_records

    return RunData(train=load_records(dataset_cfg, "train"), eval_prompts=[])


def _sort_task(cfg: Any, eval_seed: int) -> RunData:
    if cfg.name != "sort":
        raise PrefrunError(f"unknown synthetic task {cfg.name!r}; available: sort")
    task = synthetic.SortTask(min_len=cfg.min_len, max_len=cfg.max_len, vocab=cfg.vocab)
    # Fixed seed streams per split, independent of the run seed: seeds vary the training order and the
    # sampling, not the data, as with a real dataset. The SFT reference is then shared by a sweep
    # (its cache key holds everything that shapes it).
    train = synthetic.preference_records(task, cfg.train_prompts, cfg.k, cfg.max_swaps, cfg.corrupt_prob, seed=10_000)
    return RunData(
        train=train,
        eval_prompts=synthetic.eval_prompts(task, cfg.eval_prompts, seed=eval_seed),
        sft=synthetic.sft_records(task, cfg.sft_records, cfg.sft_max_swaps, seed=0),
        words=task.words(),
        reward_fn=synthetic.oracle_reward,
        strict_fns={
            "exact_sort": synthetic.is_sorted_exactly,
            "valid_permutation": synthetic.is_valid_permutation,
        },
    )
