"""Figures of runs and sweeps, drawn with matplotlib's Agg backend (no display needed).

A sweep or study (``prefrun-compare PATH --plot``), into PATH/plots:

- ``reward_vs_kl.png``: the policy's reward (the oracle's, else a reward source's, else a win rate) against
  KL(policy ‖ reference), one point per variant (runs that differ only by seed), error bars = ±1 std over
  seeds, coloured by objective, labelled by the hyperparameter that varies; the reference at KL 0.
- ``training_curves.png``: loss, reward margin and chosen / rejected log-probs against the step, the mean
  over seeds of each variant.
- ``evaluators.png``: each evaluator's headline metric (win rate, accuracy, reward) per variant; bars = mean
  over seeds, dots = seeds, whiskers = the evaluator's 95% interval (mean over seeds) where it reports one
  (``<metric>_ci`` = [lo, hi] or ``<metric>_low`` / ``<metric>_high``), else ±1 std over seeds.

One run (``plot_run(run_dir)``): ``<run dir>/plots/training.png``, its training curves (and the SFT stage's
loss when it trained in this run's log), also logged to W&B when a W&B run is active.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from prefrun.results.figure_data import (
    headline_metrics,
    interval,
    load_runs,
    mean_std,
    metric_of,
    stage_curves,
    sweep_points,
    variants,
)
from prefrun.results.metrics_log import MetricsFile

CURVES = (  # panel title, [(metrics.jsonl key, line style, legend suffix)]
    ("loss", [("loss", "-", "")]),
    ("reward margin", [("rewards/margins", "-", "")]),
    ("log-probs: chosen (solid), rejected (dashed)", [("logps/chosen", "-", ""), ("logps/rejected", "--", "")]),
)


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _name(group: dict[str, Any], sep: str = " ") -> str:
    """A variant's name on a figure: its objective, and its label when that says more."""
    return group["objective"] if group["label"] == group["objective"] else f"{group['objective']}{sep}{group['label']}"


def _colours(objectives: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    names = sorted(set(objectives))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def plot_reward_vs_kl(groups: list[dict[str, Any]], path: Path) -> Path | None:
    y_key, x_key, points = sweep_points(groups)
    if not points:
        return None
    colours = _colours([p["objective"] for p in points])
    fig, (ax,) = _figure(7.5, 5.2)
    for objective, colour in colours.items():
        mine = [p for p in points if p["objective"] == objective]
        xs, ys = [p["x"] for p in mine], [p["y"] for p in mine]
        errors = {"xerr": [p["x_err"] for p in mine], "yerr": [p["y_err"] for p in mine]}
        ax.errorbar(xs, ys, **errors, fmt="o", color=colour, capsize=3, label=objective)
        for p in mine:
            ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    reference = [metric_of(r, "reference/oracle_reward") for g in groups for _, r in g["runs"]]
    refs = [m[1] for m in reference if m is not None] if y_key == "policy/oracle_reward" else []
    if refs:
        ax.scatter([0.0], [statistics.fmean(refs)], marker="*", s=160, color="grey", label="reference (SFT)", zorder=3)
    seeds = sorted({p["seeds"] for p in points})
    title = f"reward vs KL: one point per variant, ±1 std over {'/'.join(map(str, seeds))} seed(s)"
    ax.set(xlabel=f"KL(policy ‖ reference)  [{x_key}]", ylabel=str(y_key), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncols=2 if len(colours) > 8 else 1)
    return _save(fig, path)


# A reward model's runs log no log-probs: its third panel shows the rewards of the chosen and rejected responses.
REWARD_CURVES = (
    *CURVES[:2],
    ("rewards: chosen (solid), rejected (dashed)", [("rewards/chosen", "-", ""), ("rewards/rejected", "--", "")]),
)


def curves_for(rows: list[dict[str, Any]]) -> tuple:
    """CURVES, or REWARD_CURVES for a log (a reward model's) with rewards but no log-probs."""
    keys = {k for r in rows for k in r}
    return REWARD_CURVES if "rewards/chosen" in keys and "logps/chosen" not in keys else CURVES


def _curve_panels(
    ax_list: list[Any], series: list[tuple[str, Any, list[list[dict[str, Any]]]]], curves: tuple = CURVES
) -> bool:
    """Draw ``curves``: ``series`` = [(name, colour, [metrics rows of each seed])]; the mean over seeds per step."""
    drawn = False
    for ax, (title, keys) in zip(ax_list, curves):
        for name, colour, seed_rows in series:
            for key, style, suffix in keys:
                by_step: dict[float, list[float]] = defaultdict(list)
                for rows in seed_rows:
                    for step, value in stage_curves(rows, key):
                        by_step[step].append(value)
                if by_step:
                    steps = sorted(by_step)
                    means = [statistics.fmean(by_step[s]) for s in steps]
                    ax.plot(steps, means, style, color=colour, label=name + suffix, linewidth=1.3)
                    drawn = True
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
    return drawn


def plot_training_curves(groups: list[dict[str, Any]], path: Path) -> Path | None:
    names = [_name(g) for g in groups]
    colours = _colours(names)
    series = [
        (name, colours[name], [MetricsFile(d / "metrics.jsonl").rows() for d, _ in g["runs"]])
        for name, g in zip(names, groups)
    ]
    fig, axes = _figure(16, 4.6, len(CURVES))
    if not _curve_panels(axes, series):
        return None
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    fig.suptitle("training curves: mean over seeds of each variant")
    return _save(fig, path)


def plot_evaluators(groups: list[dict[str, Any]], path: Path) -> Path | None:
    headlines = headline_metrics([r for g in groups for _, r in g["runs"]])
    if not headlines:
        return None
    fig, axes = _figure(max(6.0, 0.45 * len(groups) * len(headlines) + 3), 4.8, len(headlines))
    colours = _colours([g["objective"] for g in groups])
    for ax, (evaluator, key) in zip(axes, headlines.items()):
        names, whisker_kind = [], set()
        for i, g in enumerate(groups):
            evs = [r.get("eval", {}) for _, r in g["runs"]]
            values = [float(ev[key]) for ev in evs if isinstance(ev.get(key), int | float)]
            if not values:
                continue
            mean, std = mean_std(values)
            intervals = [iv for ev in evs if (iv := interval(ev, key))]
            low, high = (mean - std, mean + std)
            if intervals:
                low, high = statistics.fmean(iv[0] for iv in intervals), statistics.fmean(iv[1] for iv in intervals)
            whisker_kind.add("95% interval" if intervals else "±1 std over seeds")
            ax.bar(i, mean, color=colours[g["objective"]], alpha=0.75)
            ax.errorbar([i], [mean], yerr=[[mean - low], [high - mean]], fmt="none", color="black", capsize=4)
            ax.scatter([i] * len(values), values, color="black", s=9, zorder=3)
            names.append((i, _name(g, "\n")))
        if "win_rate" in key:
            ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xticks([i for i, _ in names], [n for _, n in names], rotation=60, ha="right", fontsize=7)
        metric = key if evaluator == "oracle" else key.split("/", 1)[1]
        ax.set(title=f"{evaluator}: {metric}", xlabel=f"whiskers: {', '.join(sorted(whisker_kind))}")
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_sweep(root: str | Path) -> list[Path]:
    """Every figure of the runs under ``root``, into ``root/plots``; the paths written."""
    groups = variants(load_runs(root))
    out = Path(root) / "plots"
    drawn = [
        plot_reward_vs_kl(groups, out / "reward_vs_kl.png"),
        plot_training_curves(groups, out / "training_curves.png"),
        plot_evaluators(groups, out / "evaluators.png"),
    ]
    return [p for p in drawn if p is not None]


def plot_run(run_dir: str | Path) -> list[Path]:
    """``<run dir>/plots/training.png`` from its metrics.jsonl (logged to W&B when a run is active); [] if empty."""
    run_dir = Path(run_dir)
    rows = MetricsFile(run_dir / "metrics.jsonl").rows()
    sft = [(r["step"], r["loss"]) for r in rows if r.get("stage") == "sft" and r.get("kind") == "step" and "loss" in r]
    fig, axes = _figure(16 if not sft else 20, 4.4, len(CURVES) + bool(sft))
    if not _curve_panels(axes, [("policy", "tab:blue", [rows])], curves_for(rows)):
        return []
    if sft:
        axes[-1].plot(*zip(*sft), color="tab:green")
        axes[-1].set(title="SFT loss (the reference)", xlabel="step")
        axes[-1].grid(alpha=0.3)
    fig.suptitle(f"training: {'/'.join(run_dir.parts[-3:])}")  # objective / overrides / seed
    path = _save(fig, run_dir / "plots" / "training.png")
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return [path]
    if wandb.run is not None:
        wandb.log({"plots/training": wandb.Image(str(path))})
    return [path]
