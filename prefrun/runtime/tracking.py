"""Experiment tracking: the run's W&B run, opened once by the runner (rank 0) and always closed.

Trainers never read the logger config: they ask ``report_to()`` whether a W&B run is open and log into it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def wandb_mode(requested: str) -> str:
    """auto = online when the user is logged in (an API key is configured), offline otherwise."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text():
        return "online"
    return "offline"


def open_wandb(logger_cfg: Any, run_dir: Path, name: str, config: dict[str, Any]) -> bool:
    """Start the W&B run (offline unless logged in) with its files in ``run_dir``; False when logger=none."""
    if logger_cfg.name != "wandb":
        return False
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    if wandb.run is not None:
        return True
    wandb.init(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        group=logger_cfg.group,
        tags=list(logger_cfg.tags),
        name=name,
        dir=str(run_dir),
        mode=wandb_mode(logger_cfg.mode),
        config=config,
        reinit="finish_previous",
    )
    return True


def report_to() -> list[str]:
    """What a transformers Trainer reports to: ["wandb"] while this process has an open W&B run."""
    import sys

    wandb = sys.modules.get("wandb")  # never imported unless the runner opened a run
    return ["wandb"] if wandb is not None and getattr(wandb, "run", None) is not None else []


def close_wandb(summary: dict[str, Any] | None = None, failed: bool = False) -> None:
    """Put the final numbers into the W&B summary and finish the run (exit code 1 when the run failed)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    if summary:
        wandb.run.summary.update({k: v for k, v in summary.items() if isinstance(v, int | float)})
    wandb.finish(exit_code=1 if failed else 0)
