"""The run lifecycle every task gets: files, results.json last, W&B closed also when the task fails, one run per
directory, leftovers of killed runs removed, a full disk and Ctrl-C told in one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from prefrun import runner
from prefrun.errors import PrefrunError
from prefrun.tasks import TASKS


def config(tmp_path, task: str, cache_dir: str | None = None, **run):
    return OmegaConf.create(
        {
            "task": {"name": task},
            "experiment_name": "t",
            "dataset": {"name": "d"},
            "model": {"name": "m"},
            "seed": 0,
            "hardware": {"accelerator": "cpu"},
            "logger": {"name": "wandb"},
            "paths": {"output_dir": str(tmp_path), "cache_dir": cache_dir or str(tmp_path / ".cache")},
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


# --- one run per directory ------------------------------------------------------------------------------------
HOLDER = "import sys, time\nfrom prefrun.runtime.locks import FileLock\nlock = FileLock(sys.argv[1])\n"
HOLDER += "assert lock.try_acquire()\nprint('held', flush=True)\ntime.sleep(60)\n"


def _holding(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@TASKS.register("test_logging")
class LoggingTask(_Task):
    """Logs three steps; between the first and the others the same run is started again into its directory."""

    name = "test_logging"
    second: list = []

    def run(self, cfg, ctx):
        metrics = ctx.run_dir / "metrics.jsonl"
        with metrics.open("a") as f:
            f.write(json.dumps({"stage": "train", "step": 1}) + "\n")
        if not LoggingTask.second:  # once (unlocked, the second run would start a third one)
            try:
                LoggingTask.second.append("started")
                runner.run(cfg, ctx.run_dir)
            except PrefrunError as e:
                LoggingTask.second.append(str(e))
        with metrics.open("a") as f:
            f.writelines(json.dumps({"stage": "train", "step": s}) + "\n" for s in (2, 3))
        return {"objective": "x"}


def test_a_second_run_into_a_running_directory_stops_and_names_the_first(tmp_path, wandb_calls):
    run_dir = tmp_path / "run"
    runner.run(config(tmp_path, "test_logging"), run_dir)
    assert LoggingTask.second == [
        "started",
        f"{run_dir} is in use by another prefrun run (pid {os.getpid()}); wait for it to finish or stop it, or give "
        "this run another directory (another seed or override, or hydra.run.dir=...)",
    ]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # each line once: the second run wrote and reset nothing
    assert not (run_dir / runner.RUN_LOCK).exists()  # released with the run


def test_the_holder_named_is_the_other_process_and_a_dead_holder_blocks_nothing(tmp_path, wandb_calls):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"stage": "train", "step": 1}\n')
    holder = _holding(run_dir / runner.RUN_LOCK)
    try:
        with pytest.raises(PrefrunError, match=rf"^{run_dir} is in use by another prefrun run \(pid {holder.pid}\);"):
            runner.run(config(tmp_path, "test_ok"), run_dir)
        assert (run_dir / "metrics.jsonl").read_text() == '{"stage": "train", "step": 1}\n'  # untouched
    finally:
        holder.kill()
        holder.wait()
    runner.run(config(tmp_path, "test_ok"), run_dir)  # its lock file is still there, with a dead PID
    assert (run_dir / "results.json").exists()


def test_under_ranks_the_preparing_process_holds_the_lock_and_its_rank_0_runs(tmp_path, wandb_calls, monkeypatch):
    """`prepare` (once, before ranks start) takes the lock and names itself to the ranks; rank 0 of the run then
    runs without a lock of its own, and a run from elsewhere is refused until the preparing process ends."""
    monkeypatch.setattr(runner, "_prepared", {})
    monkeypatch.delenv(runner.LOCK_ENV, raising=False)
    run_dir = tmp_path / "run"
    cfg = config(tmp_path, "test_ok")
    runner.prepare(cfg, run_dir)
    assert os.environ[runner.LOCK_ENV] == f"{os.getpid()}:{run_dir.resolve()}"
    probe = "import sys\nfrom prefrun.runtime.locks import FileLock\nprint(FileLock(sys.argv[1]).try_acquire())"
    elsewhere = subprocess.run([sys.executable, "-c", probe, str(run_dir / runner.RUN_LOCK)], capture_output=True)
    assert elsewhere.stdout.strip() == b"False"
    runner.run(cfg, run_dir)  # rank 0 in the preparing process (ranks started by srun or torchrun)
    assert (run_dir / runner.RUN_LOCK).exists()  # still held: the preparing process keeps it
    monkeypatch.setattr(runner, "_prepared", {})  # a worker the launcher started: only the variable tells it
    monkeypatch.setenv(runner.LOCK_ENV, f"{os.getppid()}:{run_dir.resolve()}")
    assert runner.lock_run_dir(run_dir) is None


def test_temporaries_a_killed_run_left_are_removed_at_the_next_start(tmp_path, wandb_calls):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    left = [run_dir / f".model.tmp{dead.pid}", cache / "sft" / f".sft-abc.tmp-{dead.pid}-00ff@{host}"]
    for path in left:
        (path / "trainer").mkdir(parents=True)
    live = cache / "reference" / f".ref-1.json.tmp-{os.getppid()}-00ff@{host}"  # another run, still writing
    live.parent.mkdir(parents=True)
    live.write_text("[")
    runner.run(config(tmp_path, "test_ok", cache_dir=str(cache)), run_dir)
    assert not any(p.exists() for p in left) and live.exists()


# --- faults told in one line ----------------------------------------------------------------------------------
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"  # torch.save, measured


@TASKS.register("test_disk_full")
class DiskFullTask(_Task):
    name = "test_disk_full"
    error: BaseException = RuntimeError(TORCH_FULL_DISK)

    def run(self, cfg, ctx):
        raise DiskFullTask.error


def _disk(free: int, total: int = 100 << 30):
    return lambda path: shutil._ntuple_diskusage(total, total - free, free)


def test_a_full_disk_while_checkpointing_is_one_line_naming_the_device(tmp_path, wandb_calls, monkeypatch):
    from prefrun.runtime import disk_space

    monkeypatch.setattr(disk_space.shutil, "disk_usage", _disk(free=4096))
    run_dir = tmp_path / "run"
    device, mount = disk_space.mount_of(run_dir)
    with pytest.raises(PrefrunError) as raised:
        runner.run(config(tmp_path, "test_disk_full"), run_dir)
    assert str(raised.value) == (
        f"no space left on {device} (mounted at {mount}, 4.0 KiB free) while writing {run_dir}: free space there, "
        "or point paths.output_dir / paths.cache_dir at a disk with room, then rerun the same command (a partial run "
        "resumes from its last complete checkpoint)"
    )
    assert raised.value.__suppress_context__ and not (run_dir / "results.json").exists()


def test_torch_write_errors_with_room_on_disk_and_other_errors_stay_as_they_are(tmp_path, wandb_calls, monkeypatch):
    from prefrun.runtime import disk_space

    monkeypatch.setattr(disk_space.shutil, "disk_usage", _disk(free=50 << 30))
    with pytest.raises(RuntimeError, match="inline_container"):
        runner.run(config(tmp_path, "test_disk_full"), tmp_path / "run")
    monkeypatch.setattr(DiskFullTask, "error", ValueError("something else"))
    with pytest.raises(ValueError, match="something else"):
        runner.run(config(tmp_path, "test_disk_full"), tmp_path / "run")


def test_an_errno_enospc_names_the_file_it_could_not_write_even_with_room_left_now(tmp_path, wandb_calls, monkeypatch):
    """A failed write frees what it had written, so the disk may not look full by the time the error is told."""
    target = tmp_path / "run" / "checkpoints" / "checkpoint-4" / "optimizer.pt"
    monkeypatch.setattr(DiskFullTask, "error", OSError(errno.ENOSPC, "No space left on device", str(target)))
    with pytest.raises(PrefrunError, match=rf"^no space left on .* while writing {target}: free space there"):
        runner.run(config(tmp_path, "test_disk_full"), tmp_path / "run")


@TASKS.register("test_interrupted")
class InterruptedTask(_Task):
    name = "test_interrupted"

    def run(self, cfg, ctx):
        raise KeyboardInterrupt


def test_ctrl_c_outside_training_is_one_line_and_exit_130(tmp_path, wandb_calls, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as raised:
        runner.run(config(tmp_path, "test_interrupted"), run_dir)
    assert raised.value.code == 130
    assert capsys.readouterr().err == (
        f"prefrun: interrupted by SIGINT; {run_dir} is not finished: rerun the same command to start it again "
        "(cached stages are kept)\n"
    )
    assert wandb_calls[-1] == ("close", None, True) and not (run_dir / "results.json").exists()
