"""Atomic writes leave no temporary behind, and the temporaries a killed writer left are removed at the next start."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time

import pytest

from prefrun.results import files
from prefrun.results.files import is_stale_temporary, remove_stale_temporaries, temp_path, write_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _aged(path, seconds: float):
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


def test_a_temporary_is_hidden_and_names_its_writer(tmp_path):
    tmp = temp_path(tmp_path / "results.json")
    assert tmp.parent == tmp_path and tmp.name.startswith(".results.json.tmp-")
    assert f"-{os.getpid()}-" in tmp.name and tmp.name.endswith(f"@{socket.gethostname()}")


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path, monkeypatch):
    """A full disk at fsync: the error reaches the caller, the directory is as before."""
    (tmp_path / "keep.txt").write_text("earlier")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "results.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_dead_writers_temporaries_go_and_a_live_writers_stay(tmp_path):
    host = socket.gethostname()
    dead = _dead_pid()
    stale_file = tmp_path / f".ref-0123.json.tmp-{dead}-ab12cd34@{host}"
    stale_file.write_text("[[")
    stale_dir = tmp_path / f".sft-0123.tmp-{dead}-ab12cd34@{host}"
    (stale_dir / "trainer").mkdir(parents=True)
    live = tmp_path / f".ref-4567.json.tmp-{os.getppid()}-ab12cd34@{host}"  # pytest's parent process: alive
    live.write_text("[[")
    mine = temp_path(tmp_path / "x.json")
    mine.write_text("")
    other_host_new = tmp_path / f".ref-89.json.tmp-{dead}-ab12cd34@elsewhere"
    other_host_new.write_text("")
    other_host_old = tmp_path / f".ref-90.json.tmp-{dead}-ab12cd34@elsewhere"
    other_host_old.write_text("")
    _aged(other_host_old, 2 * files.STALE_AFTER_S)
    entry = tmp_path / "ref-0123.json"  # finished entries are never touched, however old
    entry.write_text("[]")
    _aged(entry, 10 * files.STALE_AFTER_S)

    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale_file.name, stale_dir.name, other_host_old.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, mine.name, other_host_new.name, entry.name])


def test_older_writers_temporaries_without_a_host(tmp_path):
    """`<name>.tmp<pid>` (model saving) and `.ref-XXXXXXXX` (an earlier cache): removed when dead and old."""
    dead = _dead_pid()
    old_dead = _aged(_mkdir(tmp_path / f"tiny-abc.tmp{dead}"), 2 * files.STALE_NO_HOST_AFTER_S)
    new_dead = _mkdir(tmp_path / f"tiny-def.tmp{dead}")  # may be another host's, still writing
    old_ref = tmp_path / ".ref-a1b2c3d4"
    old_ref.write_text("[")
    _aged(old_ref, 2 * files.STALE_NO_HOST_AFTER_S)
    assert is_stale_temporary(old_dead) and is_stale_temporary(old_ref)
    assert not is_stale_temporary(new_dead)
    assert not is_stale_temporary(tmp_path / "tiny-abc")  # not a temporary


def test_in_a_directory_the_caller_holds_every_other_writers_temporary_is_stale(tmp_path):
    """A locked run directory: nobody else writes there, so even a live PID's temporary is a leftover."""
    other = _mkdir(tmp_path / f".model.tmp{os.getppid()}")
    mine = temp_path(tmp_path / "metrics.jsonl")
    mine.write_text("")
    assert remove_stale_temporaries(tmp_path, exclusive=True) == [other]
    assert mine.exists()


def test_the_sweep_reaches_the_cache_subdirectories(tmp_path):
    stale = tmp_path / "sft" / f".sft-1.tmp-{_dead_pid()}-00@{socket.gethostname()}"
    stale.mkdir(parents=True)
    assert remove_stale_temporaries(tmp_path, depth=2) == [stale]
    assert remove_stale_temporaries(tmp_path / "absent", depth=2) == []


def _mkdir(path):
    path.mkdir(parents=True)
    return path


def test_lock_files_nobody_holds_go_and_held_ones_stay(tmp_path):
    from prefrun.runtime.locks import FileLock

    (tmp_path / ".sft-1.lock").write_text(f"{_dead_pid()} {socket.gethostname()}\n")  # its holder was killed
    held = FileLock(tmp_path / ".ref-2.lock")
    assert held.try_acquire()
    assert remove_stale_temporaries(tmp_path) == [tmp_path / ".sft-1.lock"]
    assert held.held and (tmp_path / ".ref-2.lock").exists()
    held.release()
