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
METRIC_TOL = 1e-5


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
def test_every_logged_metric_is_the_whole_batch_not_rank_0s_half(runs):
    """logps/*, rewards/*, lengths/*, num_tokens, ...: each step's line of a 2-rank run is the 1-process line."""
    ddp_rows = step_rows(only(runs["ddp"] / "out", "metrics.jsonl"))
    single_rows = step_rows(only(runs["single"] / "out", "metrics.jsonl"))
    assert [sorted(r) for r in ddp_rows] == [sorted(r) for r in single_rows]
    assert {"logps/chosen", "rewards/margins", "lengths/rejected", "num_tokens"} <= set(single_rows[0])
    worst: dict[str, float] = {}  # the largest |2-rank − 1-process| of each metric over the steps
    for a, b in zip(ddp_rows, single_rows):
        for key, value in b.items():
            if isinstance(value, int | float) and key != "step":
                worst[key] = max(worst.get(key, 0.0), abs(a[key] - value))
    # What remains is float32 summation order (observed ≤ 7.7e-6 on log-probs of magnitude ~35, 2 ulps).
    assert {k: d for k, d in worst.items() if d > METRIC_TOL} == {}, worst
    # Tokens are counted over both ranks' halves: the 1-process count, exactly.
    assert [r["num_tokens"] for r in ddp_rows] == [r["num_tokens"] for r in single_rows]


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


@pytest.mark.slow
def test_env_json_records_the_hardware_a_run_used(runs):
    """The hardware group is recorded with the run (its overrides do not name the run directory)."""
    ddp_env = json.loads(only(runs["ddp"] / "out", "env.json").read_text())["hardware_config"]
    single_env = json.loads(only(runs["single"] / "out", "env.json").read_text())["hardware_config"]
    assert (ddp_env["name"], ddp_env["num_processes"], ddp_env["accelerator"]) == ("ddp", 2, "cpu")
    assert (single_env["name"], single_env["num_processes"]) == ("cpu", 1)


@pytest.mark.slow
def test_a_diverging_step_stops_both_ranks_with_one_line_and_no_finished_run(tmp_path):
    """One finite but extreme score (LiPO's gains 2^s overflow) sits in one rank's half: both ranks stop at step 1
    together (a rank stopping alone would leave the other waiting in the next all-reduce)."""
    rows = [
        {
            "prompt": f"sort {i} 3 1",
            "responses": [
                {"text": f"1 3 {i}", "score": 1e300 if i == 0 else 2.0},
                {"text": f"3 1 {i}", "score": 1.0},
                {"text": f"{i} 1 3", "score": 0.0},
            ],
        }
        for i in range(8)
    ]
    data = tmp_path / "extreme.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    local = ["dataset=local", f"dataset.path={data}", "dataset.schema=list", "dataset.fields.prompt=prompt"]
    local += ["dataset.fields.responses=responses", "dataset.fields.text=text", "dataset.fields.score=score"]
    micro = [r for r in MICRO_RUN if not r.startswith(("dataset.", "sft.", "eval."))]  # the sort task's settings
    result = prefrun(
        tmp_path,
        *micro,
        *DDP,
        *local,
        "dataset.holdout=0",
        "eval=none",
        "objective=lipo",
        "sft.enabled=false",
        "train.steps=2",
        timeout=180,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("prefrun: error:")]
    assert errors == [  # once, not once per rank, and no launcher traceback
        "prefrun: error: training diverged at step 1/2: the loss is inf and the gradient norm is nan (objective=lipo, "
        "train.lr=0.001); lower train.lr or check the training data's scores for infinite or extreme values"
    ]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    assert not list(tmp_path.rglob("results.json"))


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


@pytest.mark.slow
def test_a_reward_model_trains_on_two_gloo_ranks_as_on_one_process(tmp_path):
    """task=reward_model under DDP: the same loss curve and held-out figures as one process with the same global
    batch, one saved model, written by rank 0 alone."""
    rm = [*MICRO, "task=reward_model", "objective=bt", "sft.enabled=false", "train.steps=4", "train.lr=1e-3"]
    ddp = prefrun(tmp_path / "ddp", *rm, *DDP)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-5000:]
    single = prefrun(tmp_path / "single", *rm)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp_rows = step_rows(only(tmp_path / "ddp" / "out", "metrics.jsonl"))
    single_rows = step_rows(only(tmp_path / "single" / "out", "metrics.jsonl"))
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in single_rows] == [1, 2, 3, 4]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(ddp_rows, single_rows)) < LOSS_TOL
    assert single_rows[-1]["loss"] != single_rows[0]["loss"]
    ddp_results = json.loads(only(tmp_path / "ddp" / "out", "results.json").read_text())
    single_results = json.loads(only(tmp_path / "single" / "out", "results.json").read_text())
    assert ddp_results["training"]["world_size"] == 2 and single_results["training"]["world_size"] == 1
    for key in ("reward_model/accuracy", "reward_model/ece"):
        assert ddp_results["eval"][key] == pytest.approx(single_results["eval"][key], abs=1e-3), key
    assert ddp.stdout.count("run directory:") == 1
    assert len(list((tmp_path / "ddp" / "out").rglob("model.safetensors"))) == 1
