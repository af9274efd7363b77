"""``plots/online.png``: what each round sampled — reward, ties and truncation, KL to the reference — by step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prefrun.results.metrics_log import MetricsFile


def round_rows(metrics_path: Path) -> list[dict[str, Any]]:
    """The rounds' lines of a metrics.jsonl (``stage: online``), in step order."""
    rows = [r for r in MetricsFile(metrics_path).rows() if r.get("stage") == "online" and r.get("kind") == "round"]
    return sorted(rows, key=lambda r: r["step"])


def plot_rounds(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Three panels against the step: sample reward (mean ± std), tie and truncation rates, sequence KL."""
    if not rows:
        return None
    from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend

    fig = Figure(figsize=(15, 4.2), layout="constrained")
    reward, rates, kl = fig.subplots(1, 3)
    steps = [r["step"] for r in rows]
    mean = [r["online/reward_mean"] for r in rows]
    std = [r["online/reward_std"] for r in rows]
    reward.plot(steps, mean, color="tab:blue", linewidth=1.3)
    reward.fill_between(
        steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color="tab:blue", alpha=0.15
    )
    reward.set(title="reward of the round's samples (mean ± std)", xlabel="step")
    ties = [r["online/tie_rate"] if not math.isnan(r["online/tie_rate"]) else None for r in rows]
    rates.plot(steps, ties, color="tab:orange", label="tied lists")
    rates.plot(
        steps, [r["online/truncation_rate"] for r in rows], color="tab:red", linestyle="--", label="truncated samples"
    )
    rates.set(title="ties and truncation", xlabel="step", ylim=(-0.02, 1.02))
    rates.legend(fontsize=8)
    kl.plot(steps, [r["online/kl"] for r in rows], color="tab:green")
    kl.set(title="KL(policy ‖ reference) of the samples", xlabel="step")
    for ax in (reward, rates, kl):
        ax.grid(alpha=0.3)
    fig.suptitle(f"online rounds: {'/'.join(path.parent.parent.parts[-3:])}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return path
    if wandb.run is not None:
        wandb.log({"plots/online": wandb.Image(str(path))})
    return path
