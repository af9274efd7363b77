"""Experiment tracking: the run's W&B run, opened once by the runner (rank 0) and always closed.

Trainers never read the logger config: they ask ``report_to()`` whether a W&B run is open and log into it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from prefrun.runtime.checkpoints import CHECKPOINT_DIR


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


RUN_ID_FILE = "wandb/run-id"  # in the run directory: the W&B run a resumed run continues


def wandb_run_id(run_dir: Path) -> str | None:
    """The id of the W&B run that ``run_dir`` continues: the stored one while the run resumes, else None (new).

    A run resumes when its checkpoints are still there once the runner has reset the directory
    (prefrun.runtime.checkpoints.reset_run_dir removes them when a run starts clean: no complete checkpoint,
    run.resume=false, or run.overwrite of a finished run). A clean start is a new history, so a new W&B run:
    reusing the id would log its steps again over the old ones.
    """
    stored = run_dir / RUN_ID_FILE
    if (run_dir / CHECKPOINT_DIR).is_dir() and stored.is_file():
        return stored.read_text().strip() or None
    return None


def open_wandb(logger_cfg: Any, run_dir: Path, name: str, config: dict[str, Any]) -> bool:
    """Start the W&B run (offline unless logged in) with its files in ``run_dir``; False when logger=none.

    One W&B history per run: a resumed run reopens the W&B run it started (same id, ``resume="allow"``).
    """
    if logger_cfg.name != "wandb":
        return False
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    if wandb.run is not None:
        return True
    run_id = wandb_run_id(run_dir) or secrets.token_hex(6)  # W&B's own ids: 8 of [a-z0-9]; hex fits its rules
    stored = run_dir / RUN_ID_FILE
    stored.parent.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_name(f".{stored.name}.{os.getpid()}")  # a kill mid-write leaves no torn id
    tmp.write_text(run_id + "\n")
    os.replace(tmp, stored)
    wandb.init(
        id=run_id,
        resume="allow",
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
