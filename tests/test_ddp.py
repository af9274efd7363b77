"""Multi-process training on CPU with the real engine: `prefrun hardware=ddp hardware.num_processes=2` (gloo).

One command starts the two ranks (torch.distributed.run); the loss curve matches a single-process run with the
same global batch and seed. Why it can match: the Trainer draws one seeded permutation on every rank and deals
consecutive per-device batches round-robin, so a global step sees the same 8 examples as one process with
batch 8; DDP averages the two half-batch gradients, which equals the full-batch mean. What remains is float32
summation order: observed differences are ~1e-6, the test allows LOSS_TOL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MICRO_RUN

MICRO = [*MICRO_RUN, "train.steps=6"]
DDP = ["hardware=ddp", "hardware.accelerator=cpu", "hardware.num_processes=2"]
LOSS_TOL = 1e-4


def prefrun(tmp: Path, *args: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    # The run directory is pinned so the DDP and single-process runs are found where the test expects them.
    cmd = [
        sys.executable,
        "-m",
        "prefrun",
        f"paths.output_dir={tmp}/out",
        f"paths.cache_dir={tmp}/cache",
        f"hydra.run.dir={tmp}/out/run",
        *args,
    ]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def only(root: Path, name: str) -> Path:
    found = sorted(root.rglob(name))
    assert len(found) == 1, found
    return found[0]


def step_rows(metrics: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r for r in rows if "loss" in r and r.get("stage") != "sft"]  # preference steps (SFT logs its own)


def test_a_global_batch_that_does_not_divide_is_one_clear_line(tmp_path):
    result = prefrun(
        tmp_path, *MICRO, "hardware=ddp", "hardware.accelerator=cpu", "hardware.num_processes=3", timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train.batch_size=8 does not divide over 3 processes" in result.stderr
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("config.yaml"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-rank run (first, on an empty cache) and a single-process one with the same global batch and seed."""
    tmp = tmp_path_factory.mktemp("ddp")
    ddp = prefrun(tmp / "ddp", *MICRO, *DDP)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-5000:]
    single = prefrun(tmp / "single", *MICRO, f"paths.cache_dir={tmp}/ddp/cache")
    assert single.returncode == 0, single.stderr[-3000:]
    return {"ddp": tmp / "ddp", "single": tmp / "single", "ddp_stdout": ddp.stdout}


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(runs):
    ddp_rows = step_rows(only(runs["ddp"] / "out", "metrics.jsonl"))
    single_rows = step_rows(only(runs["single"] / "out", "metrics.jsonl"))
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in single_rows] == list(range(1, 7))
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(ddp_rows, single_rows)]
    assert max(diffs) < LOSS_TOL, diffs
    assert max(abs(a["grad_norm"] - b["grad_norm"]) for a, b in zip(ddp_rows, single_rows)) < 1e-3
    assert single_rows[-1]["loss"] != single_rows[0]["loss"]  # the curve moved
    ddp_results = json.loads(only(runs["ddp"] / "out", "results.json").read_text())
    single_results = json.loads(only(runs["single"] / "out", "results.json").read_text())
    assert ddp_results["eval"]["kl"] == pytest.approx(single_results["eval"]["kl"], abs=1e-3)


@pytest.mark.slow
def test_rank0_alone_writes_and_reference_log_probs_are_computed_once(runs):
    out = runs["ddp"] / "out"
    results = only(out, "results.json")
    assert only(out, "metrics.jsonl").parent == results.parent
    assert only(out, "config.yaml").parent == results.parent
    assert runs["ddp_stdout"].count("run directory:") == 1  # one summary table, from rank 0
    training = json.loads(results.read_text())["training"]
    # Rank 0 found an empty cache, computed and stored; rank 1 waited and loaded (nothing else was stored).
    assert training["reference_cache"] == {"hits": 0, "misses": 1}
    assert training["world_size"] == 2
    assert len(list((runs["ddp"] / "cache" / "reference").glob("ref-*.json"))) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_srun_ranks_are_used_instead_of_launching(tmp_path, runs):
    """Two processes with srun's variables (what `srun --ntasks=2` sets) train as ranks 0 and 1 of one run."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NTASKS": "2",
            "SLURM_NNODES": "1",
            "SLURM_NODEID": "0",
            "SLURM_JOB_ID": "4242",
            "SLURM_STEP_ID": "0",
            "SLURM_JOB_NODELIST": "localhost",
            "MASTER_PORT": port,
        }
        cmd = [
            sys.executable,
            "-m",
            "prefrun",
            f"paths.output_dir={tmp_path}/out",
            f"paths.cache_dir={runs['ddp']}/cache",
            f"hydra.run.dir={tmp_path}/out/run",
            *MICRO,
            *DDP,
        ]
        procs.append(
            subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1", **env},
            )
        )
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    assert "torch.distributed.run" not in outs[0][1]  # nothing was launched
    assert [out.count("run directory:") for out, _ in outs] == [1, 0]  # rank 0 alone reports
    ddp_rows = step_rows(only(tmp_path / "out", "metrics.jsonl"))
    single_rows = step_rows(only(runs["single"] / "out", "metrics.jsonl"))
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in single_rows] == list(range(1, 7))
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(ddp_rows, single_rows)) < LOSS_TOL
    training = json.loads(only(tmp_path / "out", "results.json").read_text())["training"]
    assert training["world_size"] == 2  # the two processes formed one group, not two one-process runs
