"""The CPU thread budget of a run: how many threads torch and the tokenizers may use.

torch starts one intra-op thread per core it sees, whatever else runs on the machine. Two jobs on a
2-core machine then keep 4 busy threads on 2 cores, and every parallel region waits for its slowest
thread, which is often descheduled: oversubscription makes concurrent jobs far slower than fair sharing
would. The budget, set once at the start of a run (``apply_thread_budget``):

    hardware.threads: N       N threads for each process of the run
    hardware.threads: null    this process's share of the CPUs:
                              CPUs // (concurrent jobs on the node x processes of this run on the node)

- CPUs: ``SLURM_CPUS_PER_TASK`` when set, else the CPUs this process may run on (``os.sched_getaffinity``,
  which follows cgroups, taskset and SLURM's binding; ``os.cpu_count()`` where it does not exist).
- processes of this run on the node: ``LOCAL_WORLD_SIZE`` for ranks that prefrun
  (``hardware.num_processes > 1``) or torchrun started on one node: they share one set of CPUs; 1 for
  ranks that srun started, which each have their own ``SLURM_CPUS_PER_TASK``.
- concurrent jobs: ``PREFRUN_CONCURRENT_JOBS`` (default 1). None of prefrun's launchers runs jobs side by
  side on one node (Hydra's basic launcher runs a multirun's jobs one after another; the SLURM launcher
  gives each job its own CPUs), so a parallel launcher, or a user starting several runs by hand, says
  how many run at once through this variable.

``OMP_NUM_THREADS`` is set to the budget too, so processes the run starts inherit it; the tokenizers
(a Rayon pool) get ``RAYON_NUM_THREADS`` and ``TOKENIZERS_PARALLELISM=false`` unless the user set them:
their pool competes with torch's for the same cores (measured on 2 cores: 100 SFT steps took 90.5 s with
it on, 13.7 s off), and tokenizing is never the slow step of a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prefrun.errors import PrefrunError

JOBS_ENV = "PREFRUN_CONCURRENT_JOBS"


def available_cpus(environ: Mapping[str, str] | None = None, affinity: set[int] | None = None) -> tuple[int, str]:
    """(CPUs this process may use, where the number comes from): SLURM_CPUS_PER_TASK, else the affinity mask."""
    environ = os.environ if environ is None else environ
    slurm = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm:
        try:
            return max(1, int(slurm)), "SLURM_CPUS_PER_TASK"
        except ValueError:  # e.g. "2(x3)" forms belong to other SLURM variables; never expected here
            pass
    if affinity is None and hasattr(os, "sched_getaffinity"):
        affinity = os.sched_getaffinity(0)
    if affinity:
        return len(affinity), "affinity"
    return max(1, os.cpu_count() or 1), "cpu_count"


def processes_on_node(environ: Mapping[str, str] | None = None) -> int:
    """Processes of this run sharing this node's CPUs: the local ranks, unless srun gave each its own CPUs."""
    environ = os.environ if environ is None else environ
    if "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return 1  # srun's tasks: SLURM_CPUS_PER_TASK (and the affinity mask) are each task's own
    return max(1, int(environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def concurrent_jobs(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    value = environ.get(JOBS_ENV, "").strip() or "1"
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise PrefrunError(f"{JOBS_ENV}={value!r} must be a positive number of jobs running at once on this node")
    return jobs


def thread_budget(
    threads: Any = None, environ: Mapping[str, str] | None = None, affinity: set[int] | None = None
) -> dict[str, Any]:
    """The threads of one process: ``threads`` when given, else its share of the CPUs (see the module doc).

    Returns {"threads", "source"} plus, for a share, {"cpus", "cpus_from", "shared_by"}.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise PrefrunError(
                f"hardware.threads={threads!r} must be a positive number of threads per process, or null for "
                "this process's share of the CPUs"
            )
        return {"threads": threads, "source": "hardware.threads"}
    cpus, cpus_from = available_cpus(environ, affinity)
    shared_by = concurrent_jobs(environ) * processes_on_node(environ)
    return {
        "threads": max(1, cpus // shared_by),
        "source": "share",
        "cpus": cpus,
        "cpus_from": cpus_from,
        "shared_by": shared_by,
    }


def apply_thread_budget(hardware_cfg: Any) -> dict[str, Any]:
    """Set torch's intra-op and inter-op threads and the tokenizers' parallelism; returns what was set (env.json).

    Call once, at the start of a run, before any parallel work: torch fixes the inter-op pool at its first use
    (a later call leaves it as it is, and the returned ``interop_threads`` says what it is).
    """
    import torch

    setting = hardware_cfg.get("threads") if hardware_cfg is not None else None
    budget = thread_budget(setting)
    n = budget["threads"]
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # the pool already started (a second run in one process): it keeps its size
        pass
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("RAYON_NUM_THREADS", str(n))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # see the module docstring
    return {
        **budget,
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "tokenizers_parallelism": os.environ["TOKENIZERS_PARALLELISM"],
        "rayon_threads": os.environ["RAYON_NUM_THREADS"],
    }
