"""A 2-point multirun through a REAL SLURM cluster: `prefrun -m hydra/launcher=slurm objective=dpo,ipo`.

Runs where CI started the loopback cluster (`scripts/local_slurm.sh start`) and set PREFRUN_SLURM=1; skipped
otherwise. With PREFRUN_SLURM set, a cluster that does not answer is a failure, never a skip.
Elsewhere (a real cluster): PREFRUN_SLURM_TMP names a directory every node sees (default: pytest's tmp dir,
enough on one node); site settings come from conf/local/default.yaml as for any run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parent.parent
OBJECTIVES = ("dpo", "ipo")
BUDGET = [
    "train.steps=2",
    "sft.steps=20",
    "dataset.train_prompts=64",
    "dataset.sft_records=256",
    "eval.oracle.prompts=16",
    "logger=none",
]
# Small enough for a 2-CPU runner to hold both jobs at once.
LAUNCHER = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=15"]
TIMEOUT_S = 900


def _enabled() -> bool:
    return os.environ.get("PREFRUN_SLURM", "").strip().lower() not in ("", "0", "false", "no")


def _prefrun() -> str:
    """The prefrun next to this python, so the jobs (submitit uses sys.executable) run in the same venv."""
    exe = Path(sys.executable).parent / "prefrun"
    if exe.exists():
        return str(exe)
    found = shutil.which("prefrun")
    if not found:
        pytest.fail("PREFRUN_SLURM is set but no `prefrun` executable was found next to python or on PATH")
    return found


def _check_cluster() -> str:
    """The node list of a responding cluster with a usable node; a loud failure otherwise."""
    for tool in ("sinfo", "sbatch", "sacct"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"PREFRUN_SLURM is set but `{tool}` is not on PATH: start the cluster "
                "(scripts/local_slurm.sh start) or unset PREFRUN_SLURM"
            )
    deadline = time.monotonic() + 30
    last = ""
    while time.monotonic() < deadline:
        p = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=30)
        last = (p.stdout + p.stderr).strip()
        usable = [
            ln.split()[0]
            for ln in p.stdout.splitlines()
            if len(ln.split()) == 2 and ln.split()[1].rstrip("*~#") in ("idle", "mix", "alloc")
        ]
        if p.returncode == 0 and usable:
            return ",".join(usable)
        time.sleep(1)
    pytest.fail(
        f"PREFRUN_SLURM is set but the SLURM cluster is unreachable or has no usable node: {last!r} "
        "(scripts/local_slurm.sh status)"
    )


def _sacct(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (state, elapsed) from accounting; waits briefly for the records of finished jobs."""
    rows: dict[str, tuple[str, str]] = {}
    for _ in range(20):
        p = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,State,Elapsed", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = {f[0]: (f[1], f[2]) for f in (ln.split("|") for ln in p.stdout.splitlines()) if len(f) == 3}
        if all(rows.get(j, ("",))[0] == "COMPLETED" for j in job_ids):
            break
        time.sleep(1)
    return rows


def _job_logs(submitit_dir: Path) -> str:
    out = []
    for f in sorted(submitit_dir.glob("*/*_log.*")):
        out.append(f"--- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(out)


def _cancel(submitit_dir: Path) -> None:
    ids = {d.name.split("_")[0] for d in submitit_dir.glob("*") if d.is_dir()}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, timeout=30)


@pytest.mark.skipif(
    not _enabled(),
    reason="no SLURM cluster: run `scripts/local_slurm.sh start` and set "
    "PREFRUN_SLURM=1 to submit a multirun through it",
)
def test_multirun_through_slurm(tmp_path, capsys):
    nodes = _check_cluster()
    base = os.environ.get("PREFRUN_SLURM_TMP")
    out = Path(tempfile.mkdtemp(prefix="prefrun-slurm-", dir=base)) if base else tmp_path / "outputs"
    cmd = [
        _prefrun(),
        "-m",
        "hydra/launcher=slurm",
        f"objective={','.join(OBJECTIVES)}",
        *BUDGET,
        *LAUNCHER,
        f"paths.output_dir={out}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    submitit_dir = out / "default" / ".submitit"

    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _cancel(submitit_dir)
        pytest.fail(f"the multirun did not finish in {TIMEOUT_S}s (jobs cancelled)\n{_job_logs(submitit_dir)}")
    wall = time.monotonic() - t0
    assert p.returncode == 0, (
        f"prefrun -m hydra/launcher=slurm failed (rc={p.returncode})\n"
        f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}\n{_job_logs(submitit_dir)}"
    )

    # Same layout as local runs: <experiment>/<dataset>/<model>/<objective>/<overrides>/seed=<n>/
    overrides_dir = ",".join(sorted(o for o in BUDGET if not o.startswith("logger=")))
    for objective in OBJECTIVES:
        run_dir = out / "default" / "sort" / "tiny" / objective / overrides_dir / "seed=0"
        results = run_dir / "results.json"
        assert results.is_file(), (
            f"missing {results}; found {sorted(map(str, out.rglob('results.json')))}\n{_job_logs(submitit_dir)}"
        )
        data = json.loads(results.read_text())
        assert data["objective"] == objective
    assert len(list(out.rglob("results.json"))) == len(OBJECTIVES)

    # One array job, one task per point, each COMPLETED in accounting.
    job_ids = sorted(d.name for d in submitit_dir.iterdir() if d.is_dir() and "_" in d.name)
    assert len(job_ids) == len(OBJECTIVES), f"expected {len(OBJECTIVES)} array tasks, found {job_ids}"
    acct = _sacct(job_ids)
    with capsys.disabled():
        print(f"\nSLURM multirun on {nodes}: {len(job_ids)} jobs in {wall:.1f}s wall (submit to last result)")
        for j in job_ids:
            state, elapsed = acct.get(j, ("?", "?"))
            print(f"  job {j}: {state}, elapsed {elapsed}")
    assert all(acct.get(j, ("",))[0] == "COMPLETED" for j in job_ids), f"sacct: {acct}"
