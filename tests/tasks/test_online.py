"""task=online end to end on the micro testbed: a saved policy evaluated against its reference, rounds saved and
logged once each, a kill -9 mid-round resumed to the same figures, and the one-line refusals of bad settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compose_cfg

from prefrun.errors import PrefrunError
from prefrun.runner import run, summary_table
from prefrun.runtime.checkpoints import last_complete_checkpoint

REWARDS = str(Path(__file__).resolve().parents[1] / "online")  # online_rewards.py, for reward=python
# Six steps in two rounds of three (steps 1–3 and 4–6), a checkpoint every two: a kill after checkpoint-2 or -4
# falls inside a round, so the resumed run must train on that round's saved samples, not fresh ones.
RUN = [
    "task=online",
    "logger=none",
    "hardware.threads=1",  # the same float reductions in-process and in the subprocesses below
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_heads=2",
    "sft.enabled=false",  # the reference: the micro model itself (the SFT stage has its own tests)
    "dataset.train_prompts=64",
    "dataset.sft_records=256",
    "dataset.eval_prompts=16",
    "eval.oracle.prompts=8",
    "train.steps=6",
    "train.batch_size=4",
    "train.lr=1e-3",
    "train.logging_steps=1",
    "run.checkpoint_steps=2",
    "online.update_every=3",
    "reward=python",
    "reward.fn=online_rewards:distinct_words",  # a random model's answers all score 0 with the oracle: ties
]


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _steps(lines: list[dict]) -> list[int]:
    return [r["step"] for r in lines if r.get("stage") == "train" and r.get("kind") == "step"]


def _rounds(lines: list[dict]) -> list[tuple[int, int]]:
    return [(r["step"], r["round"]) for r in lines if r.get("stage") == "online"]


@pytest.fixture(scope="module")
def online_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("online")
    run_dir = tmp / "uninterrupted"
    sys.path.insert(0, REWARDS)
    try:
        return tmp, run_dir, run(compose_cfg(tmp, *RUN), run_dir, overrides=RUN)
    finally:
        sys.path.remove(REWARDS)


def test_an_online_run_saves_its_policy_rounds_figures_and_evaluation(online_run):
    _, run_dir, results = online_run
    assert json.loads((run_dir / "results.json").read_text())["task"] == "online"
    assert (run_dir / "model" / "config.json").is_file() and results["model_dir"]["bytes"] > 0
    ev = results["eval"]
    assert {"policy/oracle_reward", "reference/oracle_reward", "win_rate", "kl"} <= set(ev)
    lines = _lines(run_dir)
    assert _steps(lines) == [1, 2, 3, 4, 5, 6] and _rounds(lines) == [(1, 0), (4, 1)]
    files = sorted((run_dir / "online").glob("round-*.jsonl"))
    assert [f.name[:11] for f in files] == ["round-00000", "round-00001"]
    assert all(len(f.read_text().splitlines()) == 12 for f in files)  # 3 steps × 4 prompts per round
    o = results["online"]
    assert (o["rounds"], o["samples"], o["k"], o["pairs"], o["reward"]) == (2, 96, 4, "best_worst", "python")
    assert o["records"] > 0 and 0 <= o["tie_rate"] <= 1 and o["skipped_steps"] == 0
    assert (run_dir / "plots" / "online.png").is_file() and (run_dir / "plots" / "training.png").is_file()
    table = summary_table(results)
    assert "online: 2 rounds of K=4 (96 samples, reward=python)" in table and "win rate vs reference" in table


def _command(tmp: Path, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "prefrun",
        f"paths.output_dir={tmp}/out",
        f"paths.cache_dir={tmp}/cache",
        f"hydra.run.dir={tmp}/{name}",
        *RUN,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([REWARDS, os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_a_run_killed_mid_round_resumes_on_the_rounds_saved_samples_to_the_same_figures(online_run):
    tmp, uninterrupted, results = online_run
    run_dir = tmp / "killed"
    proc = subprocess.Popen(_command(tmp, "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if last_complete_checkpoint(run_dir / "checkpoints") is not None:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (run_dir / "results.json").exists()
    resumed = subprocess.run(_command(tmp, "killed"), capture_output=True, text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = json.loads((run_dir / "results.json").read_text())
    assert after["training"]["resumed_at_step"] in (2, 4)  # inside round 0 (steps 1–3) or round 1 (4–6)
    lines = _lines(run_dir)
    assert _steps(lines) == [1, 2, 3, 4, 5, 6] and _rounds(lines) == [(1, 0), (4, 1)]
    for a, b in zip(sorted((run_dir / "online").glob("*.jsonl")), sorted((uninterrupted / "online").glob("*.jsonl"))):
        assert a.name == b.name  # the same samples: their content hashes agree
    train = [r for r in _lines(uninterrupted) if r.get("stage") == "train" and r.get("kind") == "step"]
    again = [r for r in lines if r.get("stage") == "train" and r.get("kind") == "step"]
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in train], abs=1e-6)
    final = after["eval"]
    for key in ("policy/oracle_reward", "win_rate", "kl"):
        assert final[key] == pytest.approx(results["eval"][key], abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["online.k=1"],
            "online.k=1: objective dpo trains on a pair (online.pairs=best_worst), which needs online.k ≥ 2 samples "
            "per prompt; e.g. online.k=4",
        ),
        (["online.pairs=list"], "online.pairs=list gives whole lists, and a pairwise objective trains on pairs:"),
        (["online.update_every=0"], "online.update_every=0 is out of range: it must be an integer ≥ 1"),
        (["online.temperature=0"], "online.temperature=0 is out of range: it must be a number > 0"),
        (["online.max_new_tokens=abc"], "online.max_new_tokens='abc' is not an integer"),
        (["objective=kto"], "objective kto trains on unpaired feedback; task=online shapes its samples into pairs"),
        (["online.iterations=3", "train.steps=100"], "online.iterations=3 does not divide train.steps=100"),
        (["hardware=ddp"], "task=online runs in one process for now"),
    ],
    ids=[
        "k1_pairwise",
        "list_for_pairs",
        "update_every",
        "temperature",
        "max_new_tokens",
        "unpaired",
        "iterations",
        "ddp",
    ],
)
def test_bad_online_settings_are_one_line_errors_before_anything_runs(tmp_path, overrides, message):
    with pytest.raises(PrefrunError) as e:
        run(compose_cfg(tmp_path, "task=online", "logger=none", *overrides), tmp_path / "run")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_reward_source_that_scores_nothing_stops_the_run_at_its_first_step(tmp_path):
    overrides = [*RUN[:-1], "reward.fn=online_rewards:unscorable", "train.steps=2"]
    sys.path.insert(0, REWARDS)
    try:
        with pytest.raises(PrefrunError, match=r"^step 1: reward=python could not score any of its 16 samples"):
            run(compose_cfg(tmp_path, *overrides), tmp_path / "run", overrides=overrides)
    finally:
        sys.path.remove(REWARDS)
    assert not (tmp_path / "run" / "results.json").exists() and not list((tmp_path / "run").glob("online/*"))
