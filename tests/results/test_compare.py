"""prefrun-compare: runs that differ only by seed form one row with mean ± std of each metric."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from prefrun.results.compare import main


def write_run(root: Path, objective: str, beta: float, seed: int, reward: float) -> None:
    run_dir = root / "sort" / "tiny" / objective / f"objective.beta={beta}" / f"seed={seed}"
    run_dir.mkdir(parents=True)
    results = {
        "dataset": "sort",
        "model": "tiny",
        "objective": objective,
        "hparams": {"beta": beta},
        "train": {"lr": 1e-5, "steps": 100},
        "seed": seed,
        "variant": f"objective.beta={beta}",
        "eval": {"policy/oracle_reward": reward, "win_rate": 0.5 + reward / 10, "kl": 0.1},
    }
    (run_dir / "results.json").write_text(json.dumps(results))


def test_seeds_collapse_into_one_row_with_mean_and_std(tmp_path, capsys):
    for seed, reward in enumerate([0.8, 0.9, 1.0]):
        write_run(tmp_path, "dpo", 0.1, seed, reward)
    write_run(tmp_path, "lipo", 0.05, 0, 0.7)
    assert main([str(tmp_path), "--csv", str(tmp_path / "table.csv")]) == 0
    out = capsys.readouterr().out
    dpo_row = next(line for line in out.splitlines() if " dpo " in line)
    assert "0,1,2" in dpo_row and "0.900 ± 0.100" in dpo_row
    lipo_row = next(line for line in out.splitlines() if " lipo " in line)
    assert "0.700" in lipo_row and "±" not in lipo_row.split("0.700")[1].split()[0]
    rows = list(csv.reader((tmp_path / "table.csv").open()))
    assert rows[0][:3] == ["dataset", "model", "objective"] and len(rows) == 3


@pytest.mark.parametrize("make_dir", [True, False])
def test_a_path_without_results_is_a_clear_error(tmp_path, capsys, make_dir):
    path = tmp_path / "empty"
    if make_dir:
        path.mkdir()
    assert main([str(path)]) == 2
    assert "prefrun-compare: error:" in capsys.readouterr().err


def test_a_truncated_results_json_is_skipped_with_one_warning_naming_it(tmp_path, capsys):
    for seed, reward in enumerate([0.8, 1.0]):
        write_run(tmp_path, "dpo", 0.1, seed, reward)
    broken = tmp_path / "sort" / "tiny" / "dpo" / "objective.beta=0.1" / "seed=0" / "results.json"
    broken.write_text(broken.read_text()[:40])  # cut mid-object, as a full disk or an interrupted copy leaves it
    listed = tmp_path / "sort" / "tiny" / "lipo" / "default" / "seed=0" / "results.json"
    listed.parent.mkdir(parents=True)
    listed.write_text("[1, 2]")  # JSON, but not a run's results
    assert main([str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"prefrun-compare: warning: skipping {broken}: not valid JSON (truncated? ")
    assert warnings[0].endswith("line 1 column 38); rerun that run with run.overwrite=true")
    assert warnings[1] == (
        f"prefrun-compare: warning: skipping {listed}: a JSON list, not a run's results; "
        "rerun that run with run.overwrite=true"
    )
    dpo_row = next(line for line in captured.out.splitlines() if " dpo " in line)
    assert " 1 " in dpo_row and "1.000" in dpo_row  # the readable seed 1 alone


def test_only_unreadable_results_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"dataset": "so')
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "warning: skipping" in err and "prefrun-compare: error: no readable results.json" in err
