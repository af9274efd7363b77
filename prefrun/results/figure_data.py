"""What the figures show, read from a sweep's run directories: variants, their points, evaluators' headlines.

Runs that differ only by seed form one variant (prefrun-compare's grouping, plus the experiment, so the
variants of a study stay apart); a variant is labelled by the hyperparameters (and learning rate) that vary
among the runs of its objective, else by its run directory's overrides, else by its name.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

REWARD_KEYS = ("policy/oracle_reward", "*/policy_reward", "win_rate", "*/win_rate")
KL_KEYS = ("kl", "*/kl")
HEADLINES = ("win_rate", "accuracy", "policy_reward", "policy/oracle_reward")
OWN_PREFIXES = ("policy", "reference")  # the oracle's keys: policy/<m>, reference/<m>, win_rate, kl


def variant_key(r: dict[str, Any]) -> tuple:
    """What makes runs the same variant (their seeds differ): dataset, model, objective, overrides, hparams."""
    hp = ",".join(f"{k}={v}" for k, v in sorted(r.get("hparams", {}).items()))
    train = r.get("train", {})
    variant = r.get("variant") or ""
    return (
        r.get("dataset"),
        r.get("model"),
        r.get("objective"),
        variant,
        hp,
        train.get("lr"),
        train.get("steps"),
    )


_WARNED: set[Path] = set()  # unreadable files already reported (the table and the figures both read them)


def load_runs(root: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(run directory, results.json) of every finished run under ``root``.

    A results.json that cannot be read (truncated by a full disk or a copy, not JSON, not an object) is
    skipped with one warning line on stderr naming it, so one bad file does not hide a whole sweep.
    """
    import sys

    runs = []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            results = json.loads(path.read_text())
            problem = None if isinstance(results, dict) else f"a JSON {type(results).__name__}, not a run's results"
        except json.JSONDecodeError as e:
            problem = f"not valid JSON (truncated? {e.msg[:1].lower()}{e.msg[1:]}: line {e.lineno} column {e.colno})"
        except (OSError, UnicodeDecodeError) as e:
            problem = f"unreadable ({type(e).__name__}: {e})"
        if problem is None:
            runs.append((path.parent, results))
        elif path not in _WARNED:
            _WARNED.add(path)
            print(
                f"prefrun-compare: warning: skipping {path}: {problem}; rerun that run with run.overwrite=true",
                file=sys.stderr,
            )
    return runs


def stage_curves(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) of ``key`` over the preference stages of one metrics.jsonl, stages laid end to end."""
    points, offset, last_stage, last_step = [], 0, None, 0
    for row in rows:
        if row.get("kind", "step") != "step" or row.get("stage") == "sft":
            continue
        if row.get("stage") != last_stage:  # a curriculum's next stage counts its steps from 0 again
            offset, last_stage = offset + (last_step if last_stage is not None else 0), row.get("stage")
        last_step = row.get("step", 0)
        if isinstance(row.get(key), int | float):
            points.append((offset + last_step, float(row[key])))
    return points


def _variant_key(result: dict[str, Any]) -> tuple:
    return (result.get("experiment"), *variant_key(result))


def _settings(result: dict[str, Any]) -> dict[str, Any]:
    """The objective's hyperparameters and the learning rate: what a grid varies."""
    return {**result.get("hparams", {}), "lr": result.get("train", {}).get("lr")}


def _label(result: dict[str, Any], varied: dict[str, set[str]]) -> str:
    """What tells this variant apart: its varying hyperparameters, else its overrides, else its objective."""
    hparams = _settings(result)
    parts = [f"{k}={hparams[k]}" for k in sorted(varied.get(result.get("objective"), ())) if k in hparams]
    if parts:
        return ",".join(parts)
    variant = result.get("variant") or "default"
    if variant != "default":
        return ",".join(p.split(".", 1)[-1] for p in variant.split(","))
    return str(result.get("experiment") or result.get("objective")).split("/")[-1]


def variants(runs: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Runs that differ only by seed, grouped: [{objective, label, runs: [(dir, result)]}] in a stable order."""
    groups: dict[tuple, list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    for run in runs:
        groups[_variant_key(run[1])].append(run)
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for _, result in runs:
        for k, v in _settings(result).items():
            values[(result.get("objective"), k)].add(json.dumps(v))
    varied: dict[str, set[str]] = defaultdict(set)
    for (objective, k), seen in values.items():
        if len(seen) > 1:
            varied[objective].add(k)
    out = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        members = groups[key]
        first = members[0][1]
        out.append({"objective": str(first.get("objective")), "label": _label(first, varied), "runs": members})
    return out


def metric_of(result: dict[str, Any], pattern: str) -> tuple[str, float] | None:
    """The first eval metric matching ``pattern`` ("kl", or "*/kl" for any evaluator's)."""
    ev = result.get("eval", {})
    names = [pattern] if "*" not in pattern else sorted(k for k in ev if k.endswith(pattern[1:]))
    for name in names:
        if isinstance(ev.get(name), int | float) and not isinstance(ev.get(name), bool):
            return name, float(ev[name])
    return None


def _choose(results: list[dict[str, Any]], patterns: tuple[str, ...]) -> str | None:
    """The first key pattern that most runs report (so one figure uses one metric)."""
    counts = [sum(metric_of(r, p) is not None for r in results) for p in patterns]
    return patterns[counts.index(max(counts))] if counts and max(counts) else None


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def sweep_points(groups: list[dict[str, Any]]) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    """(reward metric, KL metric, [{objective, label, x, x_err, y, y_err, seeds}]) for the reward-vs-KL figure."""
    results = [r for g in groups for _, r in g["runs"]]
    y_key, x_key = _choose(results, REWARD_KEYS), _choose(results, KL_KEYS)
    points = []
    for g in groups:
        pairs = [(metric_of(r, x_key), metric_of(r, y_key)) for _, r in g["runs"]] if x_key and y_key else []
        pairs = [(x[1], y[1]) for x, y in pairs if x and y]
        if pairs:
            (x, x_err), (y, y_err) = mean_std([p[0] for p in pairs]), mean_std([p[1] for p in pairs])
            point = {"objective": g["objective"], "label": g["label"], "seeds": len(pairs)}
            points.append({**point, "x": x, "x_err": x_err, "y": y, "y_err": y_err})
    return y_key, x_key, points


def headline_metrics(results: list[dict[str, Any]]) -> dict[str, str]:
    """{evaluator: its headline key in results.json "eval"}; the oracle's keys carry no evaluator prefix."""
    keys = {k for r in results for k, v in r.get("eval", {}).items() if isinstance(v, int | float)}
    by_evaluator: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        head, _, rest = key.partition("/")
        evaluator, name = ("oracle", key) if not rest or head in OWN_PREFIXES else (head, rest)
        by_evaluator[evaluator].add(name)
    chosen = {}
    for evaluator, names in sorted(by_evaluator.items()):
        for headline in HEADLINES:
            if headline in names:
                chosen[evaluator] = headline if evaluator == "oracle" else f"{evaluator}/{headline}"
                break
    return chosen


def interval(ev: dict[str, Any], key: str) -> tuple[float, float] | None:
    """An evaluator's interval of ``key``: ``<key>_ci`` = [lo, hi], or ``<key>_low`` and ``<key>_high``."""
    ci = ev.get(f"{key}_ci")
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        return float(ci[0]), float(ci[1])
    low, high = ev.get(f"{key}_low"), ev.get(f"{key}_high")
    if isinstance(low, int | float) and isinstance(high, int | float):
        return float(low), float(high)
    return None
