"""The rounds of an online run: which prompts each draws, its samples, scores and log-probs, saved for resume.

Round r covers optimizer steps r·U … r·U + U − 1 (U = ``online.update_every``; ``online.iterations=N``: U =
train.steps / N, and each round's sampling policy, the previous iterate, is its reference: iterative DPO and
its kin, Xiong et al. 2024, arXiv 2312.11456; Yuan et al. 2024, arXiv 2401.10020). At its first step it takes the
next U·B prompts of a seeded permutation of the training prompts (B = ``train.batch_size``: prompts per step),
and, from the policy as it is at that step:

    samples      K per prompt (``prefrun.generation.sample``: the prompt prefilled once, seed per round)
    scores       the reward source's ``score`` (NaN = unscorable; a source that raises is asked again per
                 sample, so one bad sample costs only itself: dropped and counted)
    log-probs    old_logps = log π_θ(y) (the sampler's, read from generate's logits at temperature 1) and
                 ref_logps = log π_ref(y) (one forward of the reference, without gradient), summed over y

Step r·U + j trains on the records of the j-th B prompts (``prefrun.online.shaping``). The round is written
to ``<run dir>/online/round-<r>-<sha256[:16]>.jsonl`` (one line per prompt) before any step trains on it, so a
resumed run reads the very samples the killed one trained on; the name is the content's hash, checked on load.

Per round (one ``metrics.jsonl`` line, ``stage: online``, at the round's first step, and into W&B):

    online/reward_mean, reward_std   of the scored samples
    online/tie_rate                  prompts with scored samples but no record (all tied) / prompts scored
    online/truncation_rate           samples that reached max_new_tokens without EOS / samples
    online/kl                        mean of log π_θ(y) − log π_ref(y) over the samples (y ~ π_θ: the k1
                                     estimate of the sequence KL(π_θ ‖ π_ref), as ``eval=oracle`` reports it;
                                     π_ref the starting (SFT) model, also under ``online.iterations``)
    online/sampling_s, scoring_s, logps_s, records, unscored, score_errors, skipped_steps
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from prefrun.errors import PrefrunError
from prefrun.online.shaping import ShapeCounts, shape_rows
from prefrun.results.files import write_atomic

log = logging.getLogger("prefrun")

ROUND_DIR = "online"


@dataclass(frozen=True)
class OnlineSettings:
    """The ``online:`` block: K, the refresh period, the sampling settings of a round, the record shape."""

    k: int = 4
    update_every: int = 1  # optimizer steps per round (1 = fully online)
    temperature: float = 1.0
    max_new_tokens: int = 24
    pairs: str = "auto"  # auto | best_worst | all | list
    iterations: int | None = None  # N: N rounds of train.steps / N steps, each round's sampler its reference

    @classmethod
    def from_config(cls, online_cfg: Any) -> OnlineSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: online_cfg[k] for k in known if k in online_cfg}
        return cls(**values)


class PolicyIO(Protocol):
    """What a round needs from the trainer: samples of the current policy, the reference's log-probs of them."""

    def sample(self, prompt_ids: list[list[int]], settings: Any) -> Any: ...

    def reference_logps(self, rows: list[dict[str, Any]]) -> list[list[float]]: ...


@dataclass
class Round:
    index: int
    rows: list[dict[str, Any]]  # one per prompt, in step order
    steps: list[list[dict]]  # the records of each of the round's steps
    metrics: dict[str, float] = field(default_factory=dict)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def score_safely(source: Any, prompts: list[Any], lists: list[list[str]]) -> tuple[torch.Tensor, list[list[bool]]]:
    """[B, K] scores (NaN: unscorable) and where scoring raised. A PrefrunError (a misconfigured source) stops
    the run; any other exception makes each sample be scored alone, and those that raise again become NaN."""
    errors = [[False] * len(row) for row in lists]
    try:
        return source.score(prompts, lists).float(), errors
    except PrefrunError:
        raise
    except Exception:  # noqa: BLE001 - any failure of the user's source: retried per sample below
        pass
    scores = torch.full((len(lists), max(map(len, lists))), math.nan)
    first = None
    for b, (prompt, row) in enumerate(zip(prompts, lists)):
        for k, text in enumerate(row):
            try:
                scores[b, k] = float(source.score([prompt], [[text]])[0, 0])
            except PrefrunError:
                raise
            except Exception as e:  # noqa: BLE001 - counted and dropped, as a NaN score is
                errors[b][k] = True
                first = first or one_line(e)
    failed = sum(map(sum, errors))
    if failed:
        log.warning(
            "reward=%s raised on %d of %d samples (first: %s); they are dropped",
            source.name,
            failed,
            sum(map(len, lists)),
            first,
        )
    return scores, errors


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RoundStore:
    """Round files in ``directory``: ``round-<r>-<hash>.jsonl``, the hash that of the content (checked on load)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _files(self, index: int | None = None) -> list[Path]:
        pattern = "round-*.jsonl" if index is None else f"round-{index:05d}-*.jsonl"
        return sorted(self.directory.glob(pattern)) if self.directory.is_dir() else []

    @staticmethod
    def index_of(path: Path) -> int:
        return int(path.name.split("-")[1])

    def save(self, index: int, rows: list[dict[str, Any]]) -> Path:
        text = "".join(json.dumps(row, sort_keys=True, allow_nan=False) + "\n" for row in rows)
        path = self.directory / f"round-{index:05d}-{content_hash(text)}.jsonl"
        write_atomic(path, text)
        return path

    def load(self, index: int) -> list[dict[str, Any]] | None:
        files = self._files(index)
        if not files:
            return None
        path = files[-1]
        text = path.read_text()
        if path.stem.rsplit("-", 1)[1] != content_hash(text):
            raise PrefrunError(
                f"{path} does not match the content hash in its name (changed after it was written); delete it "
                "to sample that round again"
            )
        return [json.loads(line) for line in text.splitlines()]

    def prune(self, keep: Any) -> None:
        """Remove the round files whose index ``keep(index)`` rejects."""
        for path in self._files():
            if not keep(self.index_of(path)):
                path.unlink(missing_ok=True)


class Rounds:
    """The round of each optimizer step: built from the policy at its first step, or read back after a resume.

    ``prompts``: the training prompts (text or chat messages); ``io``: the trainer (``PolicyIO``);
    ``metrics``: metrics.jsonl (rank 0), where each round writes its line.
    """

    def __init__(
        self,
        *,
        prompts: list[Any],
        tokenizer: Any,
        settings: OnlineSettings,
        sampling: Any,
        reward: Any,
        shape: str,
        min_k: int,
        with_reference: bool,
        prompts_per_step: int,
        steps_per_round: int,
        directory: Path,
        metrics: Any = None,
        seed: int = 0,
        max_prompt_len: int = 128,
        refresh_reference: bool = False,
        preferences: bool = False,
    ):
        if not prompts:
            raise PrefrunError("task=online needs training prompts; the dataset gave none")
        self.prompts = list(prompts)
        self.tokenizer, self.settings, self.reward, self.shape = tokenizer, settings, reward, shape
        self.sampling = dataclasses.replace(
            sampling, n=settings.k, temperature=settings.temperature, max_new_tokens=settings.max_new_tokens
        )
        self.min_k, self.with_reference = min_k, with_reference
        self.per_step, self.steps_per_round = prompts_per_step, steps_per_round
        self.refresh_reference = refresh_reference
        self.preferences = preferences  # also ask the reward source for P(i ≻ j) of every two samples
        self.store, self.metrics, self.seed, self.max_prompt_len = RoundStore(directory), metrics, seed, max_prompt_len
        self.order = list(range(len(self.prompts)))
        random.Random(seed).shuffle(self.order)
        self.current: Round | None = None
        self.totals = ShapeCounts()

    # --- which round, which prompts ----------------------------------------------------------------------
    def round_of(self, step: int) -> int:
        return step // self.steps_per_round

    def first_step(self, index: int) -> int:
        return index * self.steps_per_round

    def prompt_indices(self, index: int) -> list[int]:
        """The round's prompts: the next U·B of the seeded permutation, wrapping around at its end."""
        n = self.per_step * self.steps_per_round
        return [self.order[(index * n + i) % len(self.order)] for i in range(n)]

    def resume_at(self, step: int | None) -> None:
        """Keep the round files a run resumed at ``step`` trains on (None: a fresh start keeps none)."""
        if step is None:
            self.store.prune(lambda index: False)
        else:
            self.store.prune(lambda index: self.first_step(index) <= step)

    # --- the records of a step ---------------------------------------------------------------------------
    def records_for_step(self, step: int, io: PolicyIO) -> tuple[list[dict], dict[str, float] | None]:
        """The records step ``step`` (0-based: steps already applied) trains on; the round's metrics when the
        step starts a round (else None)."""
        index = self.round_of(step)
        starts = step == self.first_step(index)
        if self.current is None or self.current.index != index:
            rows = self.store.load(index)
            if rows is None:
                self.current = self._build(index, io)
            else:
                self.current = self._assemble(index, rows, {"online/loaded": 1.0})
            if starts:
                self._log(self.current, step)
        return self.current.steps[step - self.first_step(index)], self.current.metrics if starts else None

    def _build(self, index: int, io: PolicyIO) -> Round:
        prompts = [self.prompts[i] for i in self.prompt_indices(index)]
        from prefrun.generation import encode_prompts

        prompt_ids = encode_prompts(self.tokenizer, prompts, self.max_prompt_len)
        started = time.perf_counter()
        samples = io.sample(prompt_ids, dataclasses.replace(self.sampling, seed=self.seed * 100_003 + index))
        sampled = time.perf_counter()
        scores, errors = score_safely(self.reward, prompts, samples.texts)
        prefs = self.reward.prefer(prompts, samples.texts).tolist() if self.preferences else None
        scored = time.perf_counter()
        sft = io.reference_logps(
            [{"prompt_ids": p, "response_ids": ids} for p, ids in zip(prompt_ids, samples.token_ids)]
        )
        old = samples.logps.tolist()  # the sampler's own: log π_θ(y | x) at temperature 1, from generate's logits
        ref = old if self.refresh_reference else sft  # iterations: the iterate that sampled is the reference
        rows = [
            {
                "prompt": prompt,
                "prompt_ids": list(ids),
                "token_ids": samples.token_ids[b],
                "texts": samples.texts[b],
                "eos": [bool(e) for e in samples.eos[b].tolist()],
                "scores": [None if math.isnan(s) else float(s) for s in scores[b, : len(samples.texts[b])].tolist()],
                "score_errors": sum(errors[b]),
                "old_logps": [float(x) for x in old[b]],
                "ref_logps": [float(x) for x in ref[b]],
                **({"sft_logps": [float(x) for x in sft[b]]} if self.refresh_reference else {}),
                **({"prefs": prefs[b]} if prefs else {}),  # every prompt has online.k samples: no padding
            }
            for b, (prompt, ids) in enumerate(zip(prompts, prompt_ids))
        ]
        timings = {
            "online/sampling_s": sampled - started,
            "online/scoring_s": scored - sampled,
            "online/logps_s": time.perf_counter() - scored,
        }
        built = self._assemble(index, rows, timings)  # an unscorable step raises before anything is saved
        path = self.store.save(index, rows)
        built.metrics["online/file"] = path.name  # type: ignore[assignment]
        return built

    def _assemble(self, index: int, rows: list[dict[str, Any]], extra: dict[str, float]) -> Round:
        """The round's records per step and its metrics; a step with no scorable sample stops the run."""
        steps, counts = [], ShapeCounts()
        skipped = 0
        for j in range(self.steps_per_round):
            part = rows[j * self.per_step : (j + 1) * self.per_step]
            records, step_counts = shape_rows(part, self.shape, with_reference=self.with_reference, min_k=self.min_k)
            step = self.first_step(index) + j + 1
            if step_counts.unscored == len(part):
                errors = sum(r["score_errors"] for r in part)
                raise PrefrunError(
                    f"step {step}: reward={self.reward.name} could not score any of its "
                    f"{sum(len(r['texts']) for r in part)} samples ({errors} raised, the rest NaN); the run stops: "
                    "check the reward source (reward.*) on this task's responses"
                )
            if not records:
                skipped += 1
                log.warning(
                    "step %d: all %d lists are tied (online.k=%d samples each): the step is skipped, not trained on",
                    step,
                    len(part),
                    self.settings.k,
                )
            steps.append(records)
            counts.add(step_counts)
        metrics = round_metrics(rows, counts, skipped)
        if metrics["online/truncation_rate"] == 1.0:
            log.warning(
                "round %d: every sample reached online.max_new_tokens=%d without EOS; its scores judge cut "
                "answers: raise online.max_new_tokens",
                index,
                self.settings.max_new_tokens,
            )
        self.totals.add(counts)
        return Round(index, rows, steps, {**metrics, **extra})

    def _log(self, built: Round, step: int) -> None:
        if self.metrics is not None:
            self.metrics.append(
                {"stage": "online", "kind": "round", "step": step + 1, "round": built.index, **built.metrics}
            )


def round_metrics(rows: list[dict[str, Any]], counts: ShapeCounts, skipped: int) -> dict[str, float]:
    """The per-round figures of the module docstring, from its rows and shaping counts."""
    scores = [s for r in rows for s in r["scores"] if s is not None]
    samples = sum(len(r["scores"]) for r in rows)
    # to the model training started from (the SFT reference), also when iterations refresh the reference
    kl = [o - f for r in rows for o, f in zip(r["old_logps"], r.get("sft_logps", r["ref_logps"]))]
    scorable = counts.prompts - counts.unscored
    return {
        "online/reward_mean": statistics.fmean(scores) if scores else math.nan,
        "online/reward_std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
        "online/tie_rate": counts.tied / scorable if scorable else math.nan,
        "online/truncation_rate": sum(not e for r in rows for e in r["eos"]) / samples,
        "online/kl": statistics.fmean(kl),
        "online/records": float(counts.records),
        "online/prompts": float(counts.prompts),
        "online/samples": float(samples),
        "online/unscored": float(samples - len(scores)),
        "online/score_errors": float(sum(r["score_errors"] for r in rows)),
        "online/skipped_steps": float(skipped),
    }
