"""The run lifecycle, written once for every task: checks, run directory, config files, W&B, results.

    check → (rank 0) lock the run directory → reset it, write config.yaml / overrides.yaml / env.json
          → open W&B → task.run → close W&B (also on failure) → (rank 0) results.json, atomically, last

A finished run (results.json present) is refused unless ``run.overwrite=true``; a partial one resumes from
its last complete checkpoint (``prefrun.runtime.checkpoints``). User errors surface as one-line
PrefrunErrors before anything is written as if finished; so do a full disk and Ctrl-C.

One process holds the run directory's lock (``.prefrun.lock``) for the whole run: this one, or under N ranks
the one that prepared them (the launcher, or rank 0 of ranks started by srun / torchrun), so a second run
started into the same directory stops at once with a line naming the holder. The kernel releases the lock
when its holder dies, so a crashed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.errors import PrefrunError
from prefrun.results.files import environment, remove_stale_temporaries, write_atomic, write_json
from prefrun.results.plots import plot_run
from prefrun.runtime.checkpoints import CHECKPOINT_DIR, last_complete_checkpoint, reset_run_dir
from prefrun.runtime.disk_space import no_space_error
from prefrun.runtime.distributed import is_main_process
from prefrun.runtime.locks import FileLock, pid_alive
from prefrun.runtime.tracking import close_wandb, open_wandb
from prefrun.tasks import TASKS
from prefrun.tasks.base import RunContext

log = logging.getLogger("prefrun")


RUN_LOCK = ".prefrun.lock"
# "<pid>:<run dir>": the process that prepared the run and holds its lock, for the ranks it starts
LOCK_ENV = "PREFRUN_RUN_LOCK"
INTERRUPT_EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C
_prepared: dict[str, FileLock] = {}  # the run directory this process prepared, and holds, for its ranks


def task_of(cfg: DictConfig) -> Any:
    return TASKS.get(cfg.task.name)()


def lock_run_dir(run_dir: Path) -> FileLock | None:
    """Take ``run_dir``'s lock for this process; None when this process or the launcher of its rank holds it.

    Raises a PrefrunError naming the holder's PID when another run holds it.
    """
    key = str(run_dir.resolve())
    if key in _prepared:
        return None
    pid, _, path = os.environ.get(LOCK_ENV, "").partition(":")
    if path == key and pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
        return None  # the launcher that started this rank holds it
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / RUN_LOCK)
    if not lock.try_acquire():
        raise PrefrunError(
            f"{run_dir} is in use by another prefrun run (pid {lock.holder() or 'unknown'}); wait for it to finish "
            "or stop it, or give this run another directory (another seed or override, or hydra.run.dir=...)"
        )
    return lock


def _written_dirs(cfg: DictConfig, run_dir: Path) -> list[Path]:
    cache = cfg.get("paths", {}).get("cache_dir")
    return [run_dir, *([Path(cache)] if cache else [])]


def _remove_stale_temporaries(cfg: DictConfig, run_dir: Path) -> None:
    """Temporaries a killed process left: any in the (locked) run directory, dead writers' in the cache."""
    removed = remove_stale_temporaries(run_dir, exclusive=True)
    cache = cfg.get("paths", {}).get("cache_dir")
    if cache:
        removed += remove_stale_temporaries(cache, depth=2)  # sft/, reference/, models/, baselines/
    if removed:
        log.warning("removed %d temporary files left by killed runs: %s", len(removed), ", ".join(map(str, removed)))


@contextlib.contextmanager
def _faults_as_lines(cfg: DictConfig, run_dir: Path) -> Iterator[None]:
    """A full disk becomes a one-line PrefrunError; Ctrl-C outside training one line and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        found = last_complete_checkpoint(run_dir / CHECKPOINT_DIR)
        then = f"resume from its {found.name}" if found else "start it again (cached stages are kept)"
        print(
            f"prefrun: interrupted by SIGINT; {run_dir} is not finished: rerun the same command to {then}",
            file=sys.stderr,
        )
        raise SystemExit(INTERRUPT_EXIT_CODE) from None
    except Exception as e:
        full = no_space_error(e, _written_dirs(cfg, run_dir))
        if full is None:
            raise
        raise full from None


def check_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to rerun into a finished run unless asked; a partial one is resumed or restarted."""
    if (run_dir / "results.json").exists() and not cfg.run.overwrite:
        raise PrefrunError(
            f"{run_dir} already holds a finished run; pass run.overwrite=true to replace it "
            "or choose another seed/override"
        )


def start_process(cfg: DictConfig) -> dict[str, Any]:
    """What every process of a run sets first: quiet or not, library output, its thread budget (for env.json)."""
    from prefrun.results.progress import set_quiet
    from prefrun.runtime.library_output import quiet_libraries
    from prefrun.runtime.threads import apply_thread_budget

    set_quiet(bool(cfg.run.get("quiet", False)))
    quiet_libraries()
    return apply_thread_budget(cfg.get("hardware"))


def prepare(cfg: DictConfig, run_dir: Path) -> None:
    """Once, in one process, before ranks start: the checks, the run directory's lock (held until this process
    exits or prepares another run, and named to the ranks it starts), the task's own preparation."""
    start_process(cfg)
    task = task_of(cfg)
    task.check(cfg)
    lock = lock_run_dir(run_dir)
    if lock is not None:
        for other in _prepared.values():  # a process prepares one run at a time (a sweep's points in turn)
            other.release()
        _prepared.clear()
        _prepared[str(run_dir.resolve())] = lock
        os.environ[LOCK_ENV] = f"{os.getpid()}:{run_dir.resolve()}"
        _remove_stale_temporaries(cfg, run_dir)
    with _faults_as_lines(cfg, run_dir):
        check_run_dir(run_dir, cfg)
        reset_run_dir(run_dir, cfg)
        task.prepare(cfg)


def _wandb_name(cfg: DictConfig, run_dir: Path) -> str:
    out = Path(cfg.paths.output_dir)
    return run_dir.relative_to(out).as_posix() if run_dir.is_relative_to(out) else run_dir.name


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Execute the task of ``cfg`` into ``run_dir`` (``overrides``: what the user changed); its results."""
    started = time.time()
    threads = start_process(cfg)
    task = task_of(cfg)
    task.check(cfg)  # validates before anything heavy happens
    lock = lock_run_dir(run_dir) if is_main_process() else None
    try:
        if lock is not None:
            _remove_stale_temporaries(cfg, run_dir)
        with _faults_as_lines(cfg, run_dir):
            return _run_task(cfg, task, run_dir, overrides, started, threads)
    finally:
        if lock is not None:
            lock.release()


def _run_task(
    cfg: DictConfig, task: Any, run_dir: Path, overrides: list[str] | None, started: float, threads: dict[str, Any]
) -> dict[str, Any]:
    from prefrun.tasks.steps import device_of

    check_run_dir(run_dir, cfg)
    ctx = RunContext(run_dir=run_dir, device=device_of(cfg), main_process=is_main_process())
    if ctx.main_process:
        reset_run_dir(run_dir, cfg)  # a finished run with run.overwrite starts clean; a partial one resumes
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_atomic(run_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides or []))))
        # The hardware group's settings belong here, not in the results layout (their overrides leave the run dir).
        hardware = OmegaConf.to_container(cfg.hardware, resolve=True) if "hardware" in cfg else None
        write_json(run_dir / "env.json", {**environment(), "threads": threads, "hardware_config": hardware})
    tracking = ctx.main_process and open_wandb(
        cfg.logger, run_dir, _wandb_name(cfg, run_dir), OmegaConf.to_container(cfg, resolve=True)
    )
    failed, outcome = True, {}
    try:
        outcome = task.run(cfg, ctx)
        if ctx.main_process:
            outcome["plots"] = [str(p) for p in plot_run(run_dir)]  # training curves, logged to W&B when open
        failed = False
    finally:
        if tracking:
            close_wandb({f"eval/{k}": v for k, v in outcome.get("eval", {}).items()} if not failed else None, failed)
    timings = {**ctx.timings, "wall_s": time.time() - started}
    results = {
        "task": task.name,
        "experiment": cfg.experiment_name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        **outcome,
        "timings": timings,
        "stage_labels": task.stage_labels,
        "variant": run_dir.parent.name,  # the override part of the run directory
        "run_dir": str(run_dir),
    }
    if ctx.main_process:
        write_json(run_dir / "results.json", results)  # last: its presence marks the run finished
    return results


def summary_table(results: dict[str, Any]) -> str:
    """The short table `prefrun` prints: the evaluators' rows, the wall time by stage, the run directory.

    A task with a ``summary(results)`` of its own (task=evaluate: one table over many runs) prints that.
    """
    task = TASKS.get(results.get("task", "preference"))
    if hasattr(task, "summary"):
        return task.summary(results)
    lines = [
        f"prefrun: {results.get('objective', results['task'])} on {results['dataset']} with {results['model']} "
        f"(seed {results['seed']})"
    ]
    rows = results.get("eval_rows") or []
    if rows:
        lines.append(f"{'':22}{results.get('reference_label', 'reference'):>16}{'policy':>10}")
        for label, reference, policy in rows:
            lines.append(f"{label:22}{reference:>16}{policy:>10}")
    elif results.get("eval", {}).get("note"):
        lines.append(results["eval"]["note"])
    timings = results["timings"]
    labels = results.get("stage_labels", {})
    stages = ", ".join(f"{labels.get(k, k)} {v:.1f}s" for k, v in timings.items() if k != "wall_s" and k in labels)
    lines.append(f"wall time {timings['wall_s']:.1f}s ({stages})")
    lines.append(f"run directory: {results['run_dir']}")
    return "\n".join(lines)
