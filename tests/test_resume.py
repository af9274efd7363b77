"""Preemption-safe runs: checkpoints every run.checkpoint_steps, a stop on SIGTERM, a resume after SIGKILL.

The end-to-end test stops one run twice, SIGTERM (it checkpoints and exits with PREEMPT_EXIT_CODE) then SIGKILL
(no warning), restarts it each time with the same command, and compares it with an uninterrupted run of the same
seed. The Trainer restores weights, optimizer, scheduler, RNG states and the data position, and the reference
log-probs come from the same cache, so the resumed run repeats the uninterrupted one: observed bit-identical
losses and evaluation; the test allows 1e-6.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MICRO_RUN
from omegaconf import OmegaConf

from prefrun.runtime.checkpoints import PREEMPT_EXIT_CODE, last_complete_checkpoint, reset_run_dir, truncate_metrics

STEPS = 40
RUN = [*MICRO_RUN, f"train.steps={STEPS}", "run.checkpoint_steps=4"]
TOL = 1e-6


# --- pieces ------------------------------------------------------------------------------------------------
def _checkpoint(root: Path, step: int, state: str | None = None) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_a_torn_checkpoint_is_never_picked(tmp_path):
    assert last_complete_checkpoint(tmp_path / "none") is None
    good = _checkpoint(tmp_path, 4, json.dumps({"global_step": 4}))
    _checkpoint(tmp_path, 8)  # killed before trainer_state.json
    _checkpoint(tmp_path, 12, '{"global_st')  # killed while writing it
    _checkpoint(tmp_path, 16, json.dumps({"global_step": 3}))  # not this directory's state
    assert last_complete_checkpoint(tmp_path) == good


def _rows(path: Path) -> list[dict]:
    """metrics.jsonl's preference-training lines (the SFT reference logs its own, stage "sft")."""
    return [r for r in (json.loads(line) for line in path.read_text().splitlines()) if r.get("stage") != "sft"]


def test_metrics_are_cut_back_to_the_checkpoint(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"stage": "train", "step": s, "kind": "step", "loss": 1.0} for s in range(1, 7)]
    lines.append({"stage": "train", "step": 6, "kind": "summary", "train_runtime": 1.0})
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"stage": "tr')
    truncate_metrics(metrics, 4)
    assert [(r["step"], r["kind"]) for r in _rows(metrics)] == [(s, "step") for s in range(1, 5)]
    truncate_metrics(metrics, 6)
    truncate_metrics(tmp_path / "absent.jsonl", 6)  # nothing to cut
    assert [r["step"] for r in _rows(metrics)] == [1, 2, 3, 4]


def _cfg(resume: bool = True, overwrite: bool = False):
    return OmegaConf.create({"run": {"resume": resume, "overwrite": overwrite}})


def test_a_partial_run_resumes_from_its_last_complete_checkpoint(tmp_path):
    ckpts = tmp_path / "checkpoints"
    good = _checkpoint(ckpts, 4, json.dumps({"global_step": 4}))
    _checkpoint(ckpts, 8)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in range(1, 9)))
    assert reset_run_dir(tmp_path, _cfg()) == good
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-4"]
    assert [r["step"] for r in _rows(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]


def test_without_resume_or_checkpoint_a_partial_run_starts_clean(tmp_path):
    _checkpoint(tmp_path / "checkpoints", 4, json.dumps({"global_step": 4}))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    assert reset_run_dir(tmp_path, _cfg(resume=False)) is None
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_overwrite_restarts_a_finished_run_from_scratch(tmp_path):
    _checkpoint(tmp_path / "checkpoints", 40, json.dumps({"global_step": 40}))
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    assert reset_run_dir(tmp_path, _cfg(overwrite=True)) is None
    assert not any((tmp_path / name).exists() for name in ("results.json", "metrics.jsonl", "checkpoints"))


# --- end to end --------------------------------------------------------------------------------------------
def _command(tmp: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "prefrun",
        f"paths.output_dir={tmp}/out",
        f"paths.cache_dir={tmp}/cache",
        f"hydra.run.dir={tmp}/{name}",
        *RUN,
        *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(tmp: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(tmp, name), capture_output=True, text=True, timeout=240, env=ENV)


def _stop_after_checkpoint(tmp: Path, name: str, after_step: int, sig: signal.Signals, *extra: str) -> tuple[int, str]:
    """Start the run, wait for a complete checkpoint past ``after_step``, send ``sig``; (exit code, stderr)."""
    proc = subprocess.Popen(
        _command(tmp, name, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        found = last_complete_checkpoint(tmp / name / "checkpoints")
        if found is not None and int(found.name.split("-")[1]) > after_step:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be stopped: " + proc.stderr.read()[-2000:]
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


@pytest.mark.slow
def test_a_killed_run_resumes_with_every_step_once_and_the_same_results(tmp_path):
    uninterrupted = _run(tmp_path, "uninterrupted")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    run_dir = tmp_path / "resumed"

    # SIGTERM: checkpoint at the end of the current step, exit with the requeue code.
    code, stderr = _stop_after_checkpoint(tmp_path, "resumed", 0, signal.SIGTERM)
    assert code == PREEMPT_EXIT_CODE, stderr[-3000:]
    assert "rerun the same command to resume" in stderr
    stopped = last_complete_checkpoint(run_dir / "checkpoints")
    first_stop = int(stopped.name.split("-")[1])
    assert 4 <= first_stop < STEPS and not (run_dir / "results.json").exists()
    assert max(r["step"] for r in _rows(run_dir / "metrics.jsonl")) == first_stop

    # SIGKILL, no warning, after the resumed run wrote a later checkpoint.
    code, stderr = _stop_after_checkpoint(tmp_path, "resumed", first_stop, signal.SIGKILL)
    assert code == -signal.SIGKILL, stderr[-3000:]
    assert not (run_dir / "results.json").exists()
    killed_at = max(r["step"] for r in _rows(run_dir / "metrics.jsonl"))
    assert first_stop < killed_at < STEPS

    final = _run(tmp_path, "resumed")  # the same command again
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming" in final.stdout + final.stderr  # Hydra's console log goes to stdout

    rows = _rows(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows if r.get("kind", "step") == "step"]
    assert steps == list(range(1, STEPS + 1))  # every step exactly once
    assert sum(1 for r in rows if "train_runtime" in r) == 1
    reference = _rows(tmp_path / "uninterrupted" / "metrics.jsonl")
    ref_losses = [r["loss"] for r in reference if "loss" in r]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == len(ref_losses) == STEPS
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= TOL
    got = json.loads((run_dir / "results.json").read_text())["eval"]
    want = json.loads((tmp_path / "uninterrupted" / "results.json").read_text())["eval"]
    assert want and got == pytest.approx(want, abs=TOL)


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_exits_in_one_line_like_sigterm(tmp_path):
    """SIGINT of a single-process run: the step ends, a checkpoint is written, one line says how to resume."""
    code, stderr = _stop_after_checkpoint(tmp_path, "interrupted", 0, signal.SIGINT, "sft.enabled=false")
    assert code == PREEMPT_EXIT_CODE, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "prefrun: stopped by SIGINT at a saved checkpoint; rerun the same command to resume" in stderr.splitlines()
    run_dir = tmp_path / "interrupted"
    stopped = int(last_complete_checkpoint(run_dir / "checkpoints").name.split("-")[1])
    assert max(r["step"] for r in _rows(run_dir / "metrics.jsonl")) == stopped < STEPS
    assert not (run_dir / "results.json").exists()
