"""The run lifecycle every task gets: files, results.json last, W&B closed also when the task fails."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from prefrun import runner
from prefrun.errors import PrefrunError
from prefrun.tasks import TASKS


def config(tmp_path, task: str, **run):
    return OmegaConf.create(
        {
            "task": {"name": task},
            "experiment_name": "t",
            "dataset": {"name": "d"},
            "model": {"name": "m"},
            "seed": 0,
            "hardware": {"accelerator": "cpu"},
            "logger": {"name": "wandb"},
            "paths": {"output_dir": str(tmp_path)},
            "run": {"overwrite": False, "resume": True, **run},
        }
    )


class _Task:
    stage_labels = {"work_s": "work"}

    def check(self, cfg):
        pass

    def prepare(self, cfg):
        pass


@TASKS.register("test_ok")
class OkTask(_Task):
    name = "test_ok"

    def run(self, cfg, ctx):
        with ctx.stage("work_s"):
            assert not (ctx.run_dir / "results.json").exists()  # results.json comes last
            assert (ctx.run_dir / "config.yaml").exists() and (ctx.run_dir / "env.json").exists()
        return {"objective": "x", "eval": {"score": 1.5}}


@TASKS.register("test_failing")
class FailingTask(_Task):
    name = "test_failing"

    def run(self, cfg, ctx):
        raise PrefrunError("bad value")


@pytest.fixture()
def wandb_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "open_wandb", lambda *a: calls.append("open") or True)
    monkeypatch.setattr(runner, "close_wandb", lambda summary, failed: calls.append(("close", summary, failed)))
    return calls


def test_a_finished_run_writes_its_files_and_results_last(tmp_path, wandb_calls):
    run_dir = tmp_path / "run"
    results = runner.run(config(tmp_path, "test_ok"), run_dir, overrides=["seed=0"])
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["eval"] == {"score": 1.5} and saved["task"] == "test_ok" and "work_s" in saved["timings"]
    assert OmegaConf.load(run_dir / "overrides.yaml") == ["seed=0"]
    assert wandb_calls == ["open", ("close", {"eval/score": 1.5}, False)]
    assert "work " in runner.summary_table(results)
    with pytest.raises(PrefrunError, match="already holds a finished run"):
        runner.run(config(tmp_path, "test_ok"), run_dir)


def test_a_failing_task_closes_wandb_and_leaves_nothing_looking_finished(tmp_path, wandb_calls):
    run_dir = tmp_path / "run"
    with pytest.raises(PrefrunError, match="bad value"):
        runner.run(config(tmp_path, "test_failing"), run_dir)
    assert wandb_calls == ["open", ("close", None, True)]
    assert not (run_dir / "results.json").exists()


def test_an_unknown_task_lists_the_available_ones(tmp_path):
    with pytest.raises(PrefrunError, match=r"unknown task 'train'; available: .*evaluate.*preference"):
        runner.run(config(tmp_path, "train"), tmp_path / "run")
