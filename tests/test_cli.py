"""The command line: fast help, and one clear line (no traceback, non-zero exit, no finished run) on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PREFRUN = [sys.executable, "-m", "prefrun"]


def prefrun(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [
        *PREFRUN,
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/cache",
        "logger=none",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_help_is_quick_and_lists_the_groups():
    start = time.time()
    out = subprocess.run([*PREFRUN, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for group in ("model:", "dataset:", "objective:", "hardware:", "eval:", "logger:", "experiment:"):
        assert group in out.stdout
    assert time.time() - start < 20  # no torch import before composition


def test_help_imports_neither_torch_nor_transformers():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "prefrun", "--help"], capture_output=True, text=True, timeout=60
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported


def test_cfg_job_prints_the_composed_config_without_running(tmp_path):
    out = subprocess.run([*PREFRUN, "--cfg", "job", "objective=lipo"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "name: lipo" in out.stdout


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr


BAD_INPUTS = {
    "unknown objective name": (["objective.name=nope"], ["unknown objective 'nope'", "dpo"]),
    "beta not positive": (["objective.beta=0"], ["objective.beta=0", "> 0"]),
    "beta not a number": (["objective.beta=abc"], ["objective.beta='abc'"]),
    "model path missing": (
        ["model=smollm2_135m", "model.path=/nonexistent/model"],
        ["model.path", "does not exist"],
    ),
    "dataset file missing a mapped field": (
        [
            "dataset=local",
            f"dataset.path={FIXTURES}/hh_rlhf.jsonl",
            "dataset.schema=pairwise",
            "dataset.fields.prompt=question",
            "dataset.fields.chosen=chosen",
            "dataset.fields.rejected=rejected",
        ],
        ["question", "row 0", "dataset.fields.prompt"],
    ),
    "empty dataset": (
        [
            "dataset=local",
            "dataset.path={empty}",
            "dataset.schema=pairwise",
            "dataset.fields.chosen=chosen",
            "dataset.fields.rejected=rejected",
        ],
        ["empty"],
    ),
    "unpaired data for a pairwise objective": (
        ["dataset=kto_mix", f"dataset.path={FIXTURES}/kto_mix.jsonl", "objective=dpo"],
        ["unpaired", "kto"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gets_one_clear_line(tmp_path, case):
    args, needles = BAD_INPUTS[case]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = prefrun(*[a.replace("{empty}", str(empty)) for a in args], tmp_path=tmp_path)
    _assert_one_line_error(result, *needles)
    assert len([ln for ln in result.stderr.splitlines() if ln.startswith("prefrun: error:")]) == 1
    assert not list((tmp_path / "out").rglob("results.json"))


def test_unknown_config_choice_is_refused(tmp_path):
    result = prefrun("objective=nope", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "objective/nope" in result.stderr


def test_a_finished_run_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "out/default/sort/tiny/dpo/default/seed=0"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"finished": True}))
    result = prefrun(tmp_path=tmp_path)
    _assert_one_line_error(result, "already holds a finished run", "run.overwrite=true")
    assert json.loads((run_dir / "results.json").read_text()) == {"finished": True}
