"""Sweeps land in the one results layout: a grid multirun, and an Optuna search (sweep=optuna)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

TINY = [
    "logger=none",
    "train.steps=3",
    "train.batch_size=8",
    "dataset.train_prompts=24",
    "eval.oracle.prompts=16",
    "sft.steps=20",
    "dataset.sft_records=256",
]


def prefrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "prefrun",
        *args,
        *TINY,
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_grid_multirun_points_share_the_layout_and_compare_in_one_table(tmp_path):
    result = prefrun(tmp_path, "-m", "objective=dpo,ipo", "seed=0,1")
    assert result.returncode == 0, result.stderr[-2000:]
    found = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("results.json"))
    assert found == [
        f"default/sort/tiny/{o}/{d}/seed={s}/results.json"
        for o in ("dpo", "ipo")
        for d in [
            "dataset.sft_records=256,dataset.train_prompts=24,eval.oracle.prompts=16,sft.steps=20,"
            "train.batch_size=8,train.steps=3"
        ]
        for s in (0, 1)
    ]
    table = subprocess.run(
        [sys.executable, "-m", "prefrun.results.compare", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0
    assert sum(" dpo " in line or " ipo " in line for line in table.stdout.splitlines()) == 2


def test_optuna_sweep_maximises_the_validation_metric(tmp_path):
    result = prefrun(tmp_path, "sweep=optuna", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results.json")]
    assert len(runs) == 2
    best = yaml.safe_load((tmp_path / "out" / "default" / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(r["eval"]["policy/oracle_reward"] for r in runs)
