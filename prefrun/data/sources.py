"""Where a run's data comes from: a synthetic task (with its oracle and SFT data) or a loader.

``build_data(cfg)`` returns the train records, the held-out eval prompts and preference records, the SFT
records (or None) and, for synthetic tasks, the oracle reward and strict metrics used by evaluation.

Held-out data of a loaded dataset: its eval split (``dataset.splits.eval``), read only when an evaluator
asks for it, so a hub dataset's eval split is not downloaded otherwise. A dataset without one
(``splits.eval`` null, or a ``dataset.path`` without "{split}", which would read the training file again)
holds out a seeded ``dataset.holdout`` fraction of its train records instead: those records are removed
from training, and they are the same for every run seed (a fixed seed), so a sweep compares like with like.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from prefrun.data import synthetic
from prefrun.data.records import Record
from prefrun.errors import PrefrunError

EVAL_SEEDS = {"test": 999_999, "validation": 777_777}  # disjoint held-out prompt streams of synthetic tasks
HOLDOUT_SEED = 31_337  # which train records a dataset without an eval split holds out: fixed across run seeds


class RunData:
    """A run's records. ``eval_prompts`` and ``eval_records`` may be given as zero-argument loaders: they
    are then called on first access (once), so nothing is read unless an evaluator needs it."""

    def __init__(
        self,
        train: list[Record],
        eval_prompts: list[Any] | Callable[[], list[Any]] = (),
        sft: list[Record] | None = None,
        words: list[str] | None = None,
        reward_fn: Callable[[str, str], float] | None = None,
        strict_fns: dict[str, Callable[[str, str], bool]] | None = None,
        eval_records: list[Record] | Callable[[], list[Record]] | None = None,
        held_out: int = 0,
    ) -> None:
        self.train = train
        self.sft = sft
        self.words = list(words or [])  # the tiny tokenizer's whole-word tokens
        self.reward_fn = reward_fn
        self.strict_fns = dict(strict_fns or {})
        self.held_out = held_out  # train records carved out as the held-out records (0: read from a split)
        self._eval_prompts = eval_prompts if callable(eval_prompts) else list(eval_prompts)
        self._eval_records = eval_records

    @property
    def eval_prompts(self) -> list[Any]:
        """Held-out prompts to sample (the sort task's eval stream; a loaded dataset's held-out prompts)."""
        if callable(self._eval_prompts):
            self._eval_prompts = list(self._eval_prompts())
        return self._eval_prompts

    @property
    def eval_records(self) -> list[Record]:
        """Held-out preference records (scored lists), loaded on first access."""
        if self._eval_records is None:
            raise PrefrunError("this dataset has no held-out preference records; set dataset.holdout=0.05")
        if callable(self._eval_records):
            self._eval_records = list(self._eval_records())
        return self._eval_records


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


def has_eval_split(dataset_cfg: Any) -> bool:
    """Whether the dataset names an eval split of its own: splits.eval set, and a hub dataset or a
    ``dataset.path`` with "{split}" (a plain path is one file, the training one)."""
    splits = dataset_cfg.get("splits") or {}
    if splits.get("eval") is None:
        return False
    path = dataset_cfg.get("path")
    return not path or "{split}" in str(path)


def holdout_split(
    records: list[Record], fraction: float, seed: int = HOLDOUT_SEED
) -> tuple[list[Record], list[Record]]:
    """(kept, held out): ⌊fraction · n⌋ records chosen with a fixed seed; both keep the data's order."""
    n_out = int(fraction * len(records))
    chosen = set(random.Random(seed).sample(range(len(records)), n_out))
    kept = [r for i, r in enumerate(records) if i not in chosen]
    return kept, [r for i, r in enumerate(records) if i in chosen]


def _holdout_fraction(dataset_cfg: Any) -> float:
    value = dataset_cfg.get("holdout", 0.05)
    value = 0.0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise PrefrunError(f"dataset.holdout={value!r} must be a fraction in [0, 1), e.g. dataset.holdout=0.05")
    return float(value)


def _loaded(dataset_cfg: Any) -> RunData:
    """A loader's train split (records already validated by the loader) and its held-out records."""
    from prefrun.data.loaders import load_records

    check_hub_dataset(dataset_cfg)
    train = load_records(dataset_cfg, "train")
    if has_eval_split(dataset_cfg):
        held = _EvalSplit(dataset_cfg)
        return RunData(train=train, eval_prompts=held.prompts, eval_records=held.records)
    fraction = _holdout_fraction(dataset_cfg)
    train, held_out = holdout_split(train, fraction)
    if held_out:
        return RunData(
            train=train, eval_prompts=[r["prompt"] for r in held_out], eval_records=held_out, held_out=len(held_out)
        )
    return RunData(train=train, eval_records=lambda: _no_holdout(dataset_cfg, fraction, len(train)))


def check_hub_dataset(dataset_cfg: Any) -> None:
    """Fail in seconds, with one line, when a hub dataset (no dataset.path) is neither cached nor downloadable.

    Without this, datasets spends half a minute on HTTP retries before it gives up.
    """
    hub_id = dataset_cfg.get("hub_id")
    if dataset_cfg.get("path") or not hub_id:
        return
    from prefrun.runtime.hub import unavailable

    reason = unavailable(str(hub_id), "dataset")
    if reason:
        name = dataset_cfg.get("name")
        label = f"dataset {name} ({hub_id})" if name and name != hub_id else f"dataset {hub_id}"
        raise PrefrunError(
            f"{label} {reason}; download it first (hf download --repo-type dataset {hub_id}) or point dataset.path "
            f"at a local file: dataset.path=/path/to/{name or 'data'}.jsonl ('{{split}}' in the path for its splits)"
        )


def _no_holdout(dataset_cfg: Any, fraction: float, n: int) -> list[Record]:
    raise PrefrunError(
        f"dataset {dataset_cfg.name} has no eval split and dataset.holdout={fraction:g} of its {n} train "
        "records holds out none; raise dataset.holdout (e.g. dataset.holdout=0.05 of a larger file) "
        "or set dataset.splits.eval and a dataset.path with {split}"
    )


class _EvalSplit:
    """A dataset's eval split, loaded once, on first use."""

    def __init__(self, dataset_cfg: Any) -> None:
        self.cfg = dataset_cfg
        self._records: list[Record] | None = None

    def records(self) -> list[Record]:
        if self._records is None:
            self._records = self._load()
        return self._records

    def prompts(self) -> list[Any]:
        return [r["prompt"] for r in self.records()]

    def _load(self) -> list[Record]:
        from pathlib import Path

        from prefrun.data.loaders import load_records

        split = self.cfg.splits.eval
        advice = (
            f"name an existing split in dataset.splits.eval, or set dataset.splits.eval=null to hold out "
            f"dataset.holdout={self.cfg.get('holdout') or 0.05:g} of train instead"
        )
        path = self.cfg.get("path")
        if path:
            file = Path(str(path).replace("{split}", str(split))).expanduser()
            if not file.is_file():
                raise PrefrunError(
                    f"dataset {self.cfg.name}: eval split {split!r} (dataset.splits.eval) is missing: no file {file}; "
                    + advice
                )
        try:
            return load_records(self.cfg, "eval")
        except PrefrunError as e:
            raise PrefrunError(
                f"dataset {self.cfg.name}: eval split {split!r} could not be read ({e}); {advice}"
            ) from e


def _sort_task(cfg: Any, eval_seed: int) -> RunData:
    if cfg.name == "sort_plural":  # users in groups with different oracles (prefrun/data/sort_plural.py)
        from prefrun.data.sort_plural import plural_data

        return plural_data(cfg, eval_seed)
    if cfg.name != "sort":
        raise PrefrunError(f"unknown synthetic task {cfg.name!r}; available: sort, sort_plural")
    task = synthetic.SortTask(min_len=cfg.min_len, max_len=cfg.max_len, vocab=cfg.vocab)
    # Fixed seed streams per split, independent of the run seed: seeds vary the training order and the
    # sampling, not the data, as with a real dataset. The SFT reference is then shared by a sweep
    # (its cache key holds everything that shapes it).
    train = synthetic.preference_records(task, cfg.train_prompts, cfg.k, cfg.max_swaps, cfg.corrupt_prob, seed=10_000)
    return RunData(
        train=train,
        eval_prompts=synthetic.eval_prompts(task, cfg.eval_prompts, seed=eval_seed),
        # held-out lists drawn like the training lists, from the eval split's own seed stream
        eval_records=lambda: synthetic.preference_records(
            task, cfg.eval_prompts, cfg.k, cfg.max_swaps, cfg.corrupt_prob, seed=eval_seed
        ),
        sft=synthetic.sft_records(task, cfg.sft_records, cfg.sft_max_swaps, seed=0),
        words=task.words(),
        reward_fn=synthetic.oracle_reward,
        strict_fns={
            "exact_sort": synthetic.is_sorted_exactly,
            "valid_permutation": synthetic.is_valid_permutation,
        },
    )
