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


def _bad_input_args(case: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    args, needles = BAD_INPUTS[case]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    return [a.replace("{empty}", str(empty)) for a in args], needles


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_that_names_it(tmp_path, case):
    """In process (the runner raises the PrefrunError the command line prints): each case names what is wrong."""
    from conftest import compose_cfg

    from prefrun.errors import PrefrunError
    from prefrun.runner import run

    args, needles = _bad_input_args(case, tmp_path)
    cfg = compose_cfg(tmp_path, "logger=none", *args)
    with pytest.raises(PrefrunError) as error:
        run(cfg, tmp_path / "out" / "run", overrides=args)
    message = str(error.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    assert not list((tmp_path / "out").rglob("results.json"))


def test_a_runtime_error_reaches_the_command_line_as_one_line(tmp_path):
    """The same refusal through the command line: one `prefrun: error:` line, no traceback, non-zero exit."""
    args, needles = _bad_input_args("dataset file missing a mapped field", tmp_path)
    result = prefrun(*args, tmp_path=tmp_path)
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


BAD_SETTINGS = {  # the whole list of checked settings and their messages: tests/tasks/test_settings_check.py
    "train.steps=-5": "prefrun: error: train.steps=-5 is out of range: it must be an integer ≥ 1",
    "train.lr=abc": "prefrun: error: train.lr='abc' is not a finite number: it must be a number ≥ 0",
    "seed=abc": "prefrun: error: seed='abc' is not an integer: it must be an integer ≥ 0",
    "eval.oracle.prompts=0": "prefrun: error: eval.oracle.prompts=0 is out of range: it must be an integer ≥ 1",
}


@pytest.mark.parametrize("override", list(BAD_SETTINGS))
def test_a_bad_setting_gets_one_line_before_torch_is_imported(tmp_path, override):
    """Checked before data, the SFT reference or ranks: before, -5 trained 600 steps, 0 one step, abc raised
    from inside the optimizer or the seeding, and 0 prompts a StatisticsError after training."""
    cmd = [*PREFRUN[:1], "-X", "importtime", *PREFRUN[1:], f"paths.output_dir={tmp_path}/out", "logger=none", override]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if not line.startswith("import time:")]
    assert len(lines) == 1 and lines[0].startswith(BAD_SETTINGS[override]), out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in imported
    assert not list((tmp_path / "out").rglob("*.json"))  # nothing written: no config, env or results file


def test_help_starts_with_what_prefrun_is_and_hides_internal_choices():
    out = subprocess.run([*PREFRUN, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("prefrun: a command-line experiment runner for preference optimization")
    assert "powered by Hydra" not in out.splitlines()[0]
    for task in ("preference", "evaluate"):
        assert any(line.split()[:1] == [task] for line in out.splitlines()), task
    examples = [line for line in out.splitlines() if line.strip().startswith("prefrun ")]
    assert len(examples) >= 3
    assert "outputs/<experiment>/" in out and "prefrun-compare" in out
    groups = {line.split(":")[0].strip(): line for line in out.splitlines() if line.startswith("  ") and ": " in line}
    assert "_hub" not in groups["model"] and "local" not in groups
    assert "\n== Config ==" not in out  # not the whole composed config: `prefrun --cfg job` prints that


def test_help_lists_every_selectable_choice_of_every_group():
    from prefrun.config import CONF_DIR

    out = subprocess.run([*PREFRUN, "--help"], capture_output=True, text=True, timeout=60).stdout
    listed = {
        line.split(":")[0].strip(): line.split(":", 1)[1].strip().split(", ")
        for line in out.split("== Config groups")[1].splitlines()
        if line.startswith("  ") and ": " in line
    }
    for group in Path(CONF_DIR).rglob("*"):
        name = group.relative_to(CONF_DIR).as_posix()
        choices = sorted(p.stem for p in group.glob("*.yaml") if not p.stem.startswith("_"))
        if group.is_dir() and choices and name.split("/")[0] not in ("hydra", "local"):
            assert listed[name] == choices, name  # nested groups too: data/select


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("eval=[nope]", ["Could not load 'eval/nope'"]),
        ("eval.prompts=0", ["Could not override 'eval.prompts'", "Key 'prompts' is not in struct"]),
        ("objective=nope", ["Could not find 'objective/nope'", "Available options in 'objective': aot, apo_down"]),
        ("train.steps=[1", ["no viable alternative at input '[1'"]),
    ],
)
def test_a_bad_override_hydra_refuses_is_one_line_too(tmp_path, override, needles):
    result = prefrun(override, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("prefrun: error: config: ") and len(result.stderr.splitlines()) == 1
    assert "Config search path" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_hydra_full_error_set_by_the_user_still_gives_hydras_own_report(tmp_path):
    import os

    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    cmd = [*PREFRUN, f"paths.output_dir={tmp_path}/out", "logger=none", "objective=nope"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0 and "Traceback" in result.stderr
