"""prefrun-compare: one table over every results.json under a path (a sweep, a study, a whole outputs/).

Runs that differ only by seed form one row: objective, hyperparameters, seeds, then mean ± std of
each metric. ``--csv FILE`` writes the same table as CSV; ``--plot`` draws the sweep's figures into
PATH/plots (reward vs KL, training curves, evaluators' headline metrics: see prefrun.results.plots).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from prefrun.results.figure_data import load_runs, variant_key

METRICS = [
    ("policy/oracle_reward", "reward"),
    ("reference/oracle_reward", "ref reward"),
    ("win_rate", "win rate"),
    ("kl", "KL"),
    ("policy/exact_sort", "exact"),
    ("policy/valid_permutation", "valid"),
    ("policy/length", "length"),
    ("training_summary/logps/chosen_change", "Δlogp chosen"),
    ("training_summary/logps/rejected_change", "Δlogp rejected"),
    ("training_summary/entanglement/ratio_mean", "entangle"),
    # reward-model runs (task=reward_model): held-out pair accuracy, calibration, rank correlation
    ("reward_model/accuracy", "RM acc"),
    ("reward_model/ece", "RM ECE"),
    ("reward_model/spearman", "RM ρ"),
    # diffusion runs (task=diffusion): held-out implicit accuracy and the quality guard next to the reward
    ("implicit_acc", "implicit acc"),
    ("policy/well_formed", "well-formed"),
    ("ref_error_drift", "ref err drift"),
]


def _metric(result: dict[str, Any], key: str) -> float | None:
    """An evaluation metric, or a training-summary one when the key starts with training_summary/."""
    section, _, name = key.partition("/") if key.startswith("training_summary/") else ("eval", "", key)
    value = result.get(section, {}).get(name)
    return value if isinstance(value, int | float) else None


def load_results(root: str | Path) -> list[dict[str, Any]]:
    """Every readable results.json under ``root`` (an unreadable one is skipped with a warning naming it)."""
    return [results for _, results in load_runs(root)]


def table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[variant_key(r)].append(r)
    header = ["dataset", "model", "objective", "variant", "hparams", "lr", "steps", "seeds"]
    header += [label for _, label in METRICS]
    rows = []
    for key, runs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        row = [str(x) for x in key] + [",".join(str(r.get("seed")) for r in runs)]
        for metric, _ in METRICS:
            values = [v for r in runs if (v := _metric(r, metric)) is not None]
            if not values:
                row.append("-")
            elif len(values) == 1:
                row.append(f"{values[0]:.3f}")
            else:
                row.append(f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}")
        rows.append(row)
    # Metrics no run reports (e.g. the oracle's on a dataset without one) take no column.
    keep = [i for i, h in enumerate(header) if i < 8 or any(r[i] != "-" for r in rows)]
    return [header[i] for i in keep], [[r[i] for i in keep] for r in rows]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefrun-compare", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a directory holding run directories (searched recursively)")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument("--plot", action="store_true", help="also draw the figures into PATH/plots (PNG)")
    args = parser.parse_args(argv)
    if not Path(args.path).exists():
        print(f"prefrun-compare: error: {args.path} does not exist", file=sys.stderr)
        return 2
    results = load_results(args.path)
    if not results:
        print(f"prefrun-compare: error: no readable results.json under {args.path}", file=sys.stderr)
        return 2
    header, rows = table(results)
    print(format_table(header, rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    if args.plot:
        from prefrun.results.plots import plot_sweep

        for path in plot_sweep(args.path):
            print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
