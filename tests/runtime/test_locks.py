"""The inter-process lock: one holder at a time, its PID readable by the others, and no lock outliving its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from prefrun.runtime.locks import FileLock, locked

HOLDER = textwrap.dedent(
    """
    import sys, time
    from prefrun.runtime.locks import FileLock

    lock = FileLock(sys.argv[1])
    assert lock.try_acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def _holding_process(path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_and_told_the_first_ones_pid(tmp_path):
    proc = _holding_process(tmp_path / "x.lock")
    try:
        lock = FileLock(tmp_path / "x.lock")
        assert not lock.try_acquire() and not lock.held
        assert lock.holder() == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    """kill -9 leaves the lock file with the dead PID in it; the next process takes it over at once."""
    proc = _holding_process(tmp_path / "x.lock")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "x.lock").read_text().split()[0] == str(proc.pid)  # the stale file is still there
    lock = FileLock(tmp_path / "x.lock")
    assert lock.try_acquire()
    assert lock.holder() == os.getpid()
    lock.release()
    assert not (tmp_path / "x.lock").exists()


def test_waiting_reports_the_holder_once_and_gets_the_lock_when_it_is_released(tmp_path):
    first = FileLock(tmp_path / "x.lock")
    assert first.try_acquire()
    waits, order = [], []

    def second() -> None:
        with locked(tmp_path / "x.lock", on_wait=waits.append, poll_s=0.01):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.2)
    order.append("first releases")
    first.release()
    thread.join(timeout=10)
    assert waits == [os.getpid()]  # a FileLock of this process held it: its PID is ours
    assert order == ["first releases", "second"]


def test_release_unlinks_the_file_without_letting_two_hold_one_path(tmp_path):
    """Many threads taking and releasing the same path: never two holders at once."""
    holders, overlaps = [], []

    def worker() -> None:
        for _ in range(30):
            with locked(tmp_path / "x.lock", poll_s=0.001):
                holders.append(1)
                if len(holders) > 1:
                    overlaps.append(len(holders))
                time.sleep(0.0005)
                holders.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert overlaps == []
    assert not (tmp_path / "x.lock").exists()
