"""Checkpoints, resume and preemption: what makes a killed run continue where it stopped.

``run.checkpoint_steps=N`` makes the Trainer write ``checkpoints/checkpoint-<step>`` (weights, optimizer,
scheduler, RNG states, trainer state; ``trainer_state.json`` last). ``last_complete_checkpoint`` only
accepts a directory whose trainer_state.json parses and names its step, so a checkpoint torn by a kill
is never resumed. SIGTERM / SIGUSR1 (SLURM preemption or time-out) and SIGINT (Ctrl-C) make every rank
save a checkpoint at the end of the current step and exit with ``PREEMPT_EXIT_CODE``; the same command
run again resumes from the last complete checkpoint. In a single process a second Ctrl-C stops at once,
without waiting for the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from prefrun.runtime.distributed import is_main_process

log = logging.getLogger("prefrun")

PREEMPT_EXIT_CODE = 75  # EX_TEMPFAIL: "try again" - rerun the same command to resume
PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")
INTERRUPT_SIGNAL = "SIGINT"  # Ctrl-C: checkpoints like SIGTERM (a KeyboardInterrupt would lose the run's steps)
CHECKPOINT_DIR = "checkpoints"


def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint directory, or None (missing or torn trainer_state.json)."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        step = int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if path.name == f"checkpoint-{step}" else None


def last_complete_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The highest-step complete ``checkpoint-N`` under ``checkpoint_dir``; a half-written one is skipped."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    complete = []
    for path in root.glob("checkpoint-*"):
        step = checkpoint_step(path)
        if step is not None and path.is_dir():
            complete.append((step, path))
    return max(complete)[1] if complete else None


def truncate_metrics(path: Path, step: int, stage: str = "train") -> None:
    """Drop the metrics.jsonl lines a resumed run logs again: steps after ``step`` and the end-of-training row."""
    from prefrun.results.files import write_atomic
    from prefrun.results.metrics_log import MetricsFile

    metrics = MetricsFile(path)
    if not path.exists():
        return
    metrics.truncate_after(step, stage)  # also drops a line torn by the kill; other stages' lines (sft) stay
    rows = metrics.rows()
    keep = [r for r in rows if not (r.get("stage") == stage and (r.get("kind") == "summary" or "train_runtime" in r))]
    if len(keep) != len(rows):
        write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def reset_run_dir(run_dir: Path, cfg: Any) -> Path | None:
    """Rank 0, before anything is written: make the run directory fit what this run will do.

    A finished run with ``run.overwrite=true`` starts clean. A partial run (no results.json) resumes
    from its last complete checkpoint when ``run.resume`` (metrics.jsonl cut back to that step, torn or
    later checkpoints removed) and starts clean otherwise. Returns the checkpoint it resumes from.
    """
    if not is_main_process() or not run_dir.exists():
        return None
    checkpoints = run_dir / CHECKPOINT_DIR
    finished = (run_dir / "results.json").exists()
    resume_from = None if finished or not cfg.run.resume else last_complete_checkpoint(checkpoints)
    if resume_from is None:
        if finished and not cfg.run.overwrite:
            return None  # check_run_dir refuses this one
        for name in ("results.json", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
        return None
    step = checkpoint_step(resume_from)
    for path in checkpoints.glob("checkpoint-*"):  # other entries (a curriculum stage's folder) stay
        other = checkpoint_step(path)
        if path != resume_from and (other is None or other > step):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    truncate_metrics(run_dir / "metrics.jsonl", step)
    log.warning("resuming %s from %s", run_dir, resume_from.name)
    return resume_from


class _Preemption:
    """SIGTERM / SIGUSR1 / SIGINT → save a checkpoint at the end of the current step on every rank, stop training.

    The flag is all-reduced each step, so a signal that reaches one rank stops all of them at the same
    step (no rank is left waiting in a collective). Running statistics of objectives (BCO's reward
    shift) are the trainer's to save with the checkpoint (ListTrainer's RunningRewardMean callback, kept in
    trainer_state.json).
    Made a TrainerCallback by ``preemption_callback`` (transformers is imported only then).
    """

    def __init__(self) -> None:
        self.requested: int | None = None  # the signal received here
        self.preempted = False  # training stopped for it (all ranks agree)
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - signal handler signature
        self.requested = signum

    def _interrupt(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        """Ctrl-C. Under several ranks every one of them receives it (the terminal's, torchrun's forwarded copy),
        so only a single process takes a second one as "stop now"."""
        single = int(os.environ.get("WORLD_SIZE", "1")) <= 1
        if self.requested is not None and single:
            self.uninstall()
            raise KeyboardInterrupt
        if self.requested is None and single:
            print(
                "prefrun: SIGINT: saving a checkpoint at the end of this step, then stopping "
                "(Ctrl-C again stops at once, without it)",
                file=sys.stderr,
            )
        self.requested = signum

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for name in (*PREEMPT_SIGNALS, INTERRUPT_SIGNAL):
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._interrupt if name == INTERRUPT_SIGNAL else self._handler)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _any_rank_requested(self) -> bool:
        import torch
        import torch.distributed as dist

        flag = 1 if self.requested is not None else 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = "cpu"
            if dist.get_backend() == "nccl":
                device = f"cuda:{torch.cuda.current_device()}"
            t = torch.tensor([flag], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t.item())
        return bool(flag)

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        self.install()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self._any_rank_requested():
            self.preempted = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.uninstall()

    def exit_if_preempted(self) -> None:
        """After ``trainer.train()`` returned: exit with PREEMPT_EXIT_CODE when a signal stopped it."""
        if self.preempted:
            name = signal.Signals(self.requested).name if self.requested else "a signal on another rank"
            print(
                f"prefrun: stopped by {name} at a saved checkpoint; rerun the same command to resume",
                file=sys.stderr,
            )
            sys.exit(PREEMPT_EXIT_CODE)


def train_resumable(trainer: Any, resume_from: str | Path | None) -> None:
    """``trainer.train()`` from ``resume_from`` (a checkpoint directory; None: from the start), checkpointing
    and exiting on SIGTERM/SIGUSR1/SIGINT (``_Preemption``): how every prefrun trainer trains."""
    preemption = preemption_callback()
    trainer.add_callback(preemption)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    preemption.exit_if_preempted()


def preemption_callback() -> Any:
    """A TrainerCallback doing what ``_Preemption`` says."""
    from transformers import TrainerCallback

    cls = type("PreemptionCallback", (_Preemption, TrainerCallback), {})
    return cls()
