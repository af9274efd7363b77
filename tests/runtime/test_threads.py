"""The thread budget: hardware.threads when set, else this process's share of its CPUs (SLURM's grant or the
affinity mask) divided among the concurrent jobs and the run's processes on the node."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prefrun.errors import PrefrunError
from prefrun.runtime.threads import thread_budget

EIGHT = set(range(8))


def threads(setting=None, affinity=EIGHT, **env: str) -> int:
    return thread_budget(setting, environ=env, affinity=affinity)["threads"]


def test_an_explicit_setting_is_taken_as_it_is():
    assert threads(3) == 3
    assert threads(3, PREFRUN_CONCURRENT_JOBS="4", LOCAL_WORLD_SIZE="2") == 3  # per process, never divided


@pytest.mark.parametrize("bad", [0, -2, "2", 1.5, True])
def test_a_bad_setting_names_the_field(bad):
    with pytest.raises(PrefrunError, match=r"hardware\.threads="):
        threads(bad)


def test_the_cpus_come_from_slurm_when_it_granted_them_else_from_the_affinity_mask():
    assert threads(affinity={0, 1, 2, 3}) == 4
    assert threads(affinity={5}) == 1
    assert threads(SLURM_CPUS_PER_TASK="6") == 6  # SLURM's grant, not the 8 CPUs the mask shows
    budget = thread_budget(None, environ={"SLURM_CPUS_PER_TASK": "6"}, affinity=EIGHT)
    assert budget == {"threads": 6, "source": "share", "cpus": 6, "cpus_from": "SLURM_CPUS_PER_TASK", "shared_by": 1}


def test_concurrent_jobs_divide_the_cpus_and_every_job_keeps_at_least_one_thread():
    assert threads(PREFRUN_CONCURRENT_JOBS="2") == 4
    assert threads(PREFRUN_CONCURRENT_JOBS="3") == 2  # 8 // 3
    assert threads(affinity={0, 1}, PREFRUN_CONCURRENT_JOBS="3") == 1


def test_ranks_on_one_node_share_its_cpus_but_srun_tasks_each_have_their_own():
    assert threads(LOCAL_WORLD_SIZE="2") == 4  # hardware.num_processes=2, started by prefrun / torchrun
    assert threads(LOCAL_WORLD_SIZE="2", PREFRUN_CONCURRENT_JOBS="2") == 2
    srun = {"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "LOCAL_WORLD_SIZE": "4", "SLURM_CPUS_PER_TASK": "3"}
    assert threads(**srun) == 3


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_a_bad_job_count_is_a_clear_error(bad):
    with pytest.raises(PrefrunError, match="PREFRUN_CONCURRENT_JOBS"):
        threads(PREFRUN_CONCURRENT_JOBS=bad)


APPLY = """
import json, os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one CPU, whatever the machine has
import torch
from prefrun.runtime.threads import apply_thread_budget
setting = json.loads(sys.argv[1])
applied = apply_thread_budget({"threads": setting})
print(json.dumps({**applied, "torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
                  "omp": os.environ["OMP_NUM_THREADS"]}))
"""


def _apply(setting, **env: str) -> dict:
    """apply_thread_budget in a fresh process (torch's inter-op pool can be sized once per process)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PREFRUN_", "LOCAL_WORLD"))}
    for name in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS", "OMP_NUM_THREADS"):
        clean.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", APPLY, json.dumps(setting)], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_apply_sets_torch_and_the_tokenizers_and_reports_it():
    explicit = _apply(3)
    assert (explicit["torch"], explicit["interop"], explicit["omp"]) == (3, 3, "3")
    assert explicit["tokenizers_parallelism"] == "false" and explicit["rayon_threads"] == "3"  # off: it competes
    share = _apply(None)  # one CPU in the mask
    assert (share["threads"], share["torch"], share["interop"], share["cpus_from"]) == (1, 1, 1, "affinity")
    assert share["tokenizers_parallelism"] == "false"
    assert _apply(None, TOKENIZERS_PARALLELISM="true")["tokenizers_parallelism"] == "true"  # the user's choice
