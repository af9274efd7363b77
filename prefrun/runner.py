"""The run lifecycle, written once for every task: checks, run directory, config files, W&B, results.

    check → (rank 0) reset the run directory, write config.yaml / overrides.yaml / env.json
          → open W&B → task.run → close W&B (also on failure) → (rank 0) results.json, atomically, last

A finished run (results.json present) is refused unless ``run.overwrite=true``; a partial one resumes from
its last complete checkpoint (``prefrun.runtime.checkpoints``). User errors surface as one-line
PrefrunErrors before anything is written as if finished.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.errors import PrefrunError
from prefrun.results.files import environment, write_atomic, write_json
from prefrun.results.plots import plot_run
from prefrun.runtime.checkpoints import reset_run_dir
from prefrun.runtime.distributed import is_main_process
from prefrun.runtime.tracking import close_wandb, open_wandb
from prefrun.tasks import TASKS
from prefrun.tasks.base import RunContext

log = logging.getLogger("prefrun")


def task_of(cfg: DictConfig) -> Any:
    return TASKS.get(cfg.task.name)()


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
    """Once, in one process, before ranks start: the checks, the run directory, the task's own preparation."""
    start_process(cfg)
    task = task_of(cfg)
    task.check(cfg)
    check_run_dir(run_dir, cfg)
    reset_run_dir(run_dir, cfg)
    task.prepare(cfg)


def _wandb_name(cfg: DictConfig, run_dir: Path) -> str:
    out = Path(cfg.paths.output_dir)
    return run_dir.relative_to(out).as_posix() if run_dir.is_relative_to(out) else run_dir.name


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Execute the task of ``cfg`` into ``run_dir`` (``overrides``: what the user changed); its results."""
    from prefrun.tasks.steps import device_of

    started = time.time()
    threads = start_process(cfg)
    task = task_of(cfg)
    task.check(cfg)  # validates before anything heavy happens
    check_run_dir(run_dir, cfg)
    ctx = RunContext(run_dir=run_dir, device=device_of(cfg), main_process=is_main_process())
    if ctx.main_process:
        reset_run_dir(run_dir, cfg)  # a finished run with run.overwrite starts clean; a partial one resumes
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_atomic(run_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides or []))))
        write_json(run_dir / "env.json", {**environment(), "threads": threads})
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
