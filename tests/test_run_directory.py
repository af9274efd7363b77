"""The results layout names what a run computes, not how it ran: hardware, logging and run mechanics stay out.

outputs/<experiment>/<dataset>/<model>/<objective>/<overrides>/seed=<n>: the <overrides> part is Hydra's
override_dirname, which prefrun.cli filters; the same experiment on 1 or 2 ranks lands in one directory.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prefrun.cli import _overrides_dir


@pytest.mark.parametrize(
    "override_dirname, expected",
    [
        ("", "default"),
        ("hardware.threads=1", "default"),
        ("hardware.num_processes=2,hardware.per_device_batch_size=2", "default"),
        ("logger.mode=offline,run.checkpoint_steps=10,run.quiet=true", "default"),
        ("hardware.threads=1,objective.beta=0.5,train.lr=1e-05", "objective.beta=0.5,train.lr=1e-05"),
        ("+hardware.foo=1,train.steps=5", "train.steps=5"),
        # A comma inside a list value is not a separator; '/' cannot be part of a directory name.
        ("objective.baselines=[zephyr7b_sft,/m/x],run.quiet=true", "objective.baselines=[zephyr7b_sft,_m_x]"),
        ("eval.oracle.prompts=16,hardware.threads=2", "eval.oracle.prompts=16"),
    ],
)
def test_non_result_settings_leave_the_variant_directory(override_dirname, expected):
    assert _overrides_dir(override_dirname) == expected


def test_hardware_threads_runs_into_the_default_run_directory(tmp_path):
    """`prefrun hardware.threads=1` finds the default run's results.json (and refuses to overwrite it)."""
    run_dir = tmp_path / "out/default/sort/tiny/dpo/default/seed=0"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"finished": True}))
    cmd = [sys.executable, "-m", "prefrun", f"paths.output_dir={tmp_path}/out", "hardware.threads=1", "run.quiet=true"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{run_dir} already holds a finished run" in result.stderr
