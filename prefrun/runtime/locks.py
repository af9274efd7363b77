"""An exclusive lock between processes on a lock file, and waiting for it: a run's directory, a cache entry.

``flock(2)``: the kernel releases the lock when its holder exits, kill -9 included, so a lock file left by a
dead process never blocks; the next process takes it over. The holder writes its PID and host into the
file, so a process that finds it taken can name who holds it. Releasing unlinks the file while still
holding it; a process that locked the unlinked file meanwhile sees that the path now names another file
(or none) and tries again, so two processes never both believe they hold one path.

On a file system without flock (some Lustre or NFS mounts) the lock falls back to creating the file
exclusively; there a lock file whose PID is dead on this host is stale and is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_text() -> str:
    return f"{os.getpid()} {socket.gethostname()}\n"


class FileLock:
    """``try_acquire()`` → bool, ``acquire(on_wait=...)`` waits, ``release()``; ``holder()`` names the PID."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._exclusive_file = False  # held by the no-flock fallback

    @property
    def held(self) -> bool:
        return self._fd is not None or self._exclusive_file

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False (at once) if another process (or FileLock) does."""
        if self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as e:
                os.close(fd)
                if e.errno in NO_FLOCK:
                    return self._try_exclusive_file()
                raise
            try:  # the holder before us may have unlinked this file on release: lock the path's file instead
                here, locked = os.stat(self.path), os.fstat(fd)
                same = (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, _holder_text().encode())
                self._fd = fd
                return True
            os.close(fd)

    def _try_exclusive_file(self) -> bool:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid, host = self._read_holder()
                if pid is not None and host == socket.gethostname() and not pid_alive(pid):
                    self.path.unlink(missing_ok=True)  # stale: its holder died without releasing
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                f.write(_holder_text())
            self._exclusive_file = True
            return True
        return False

    def _read_holder(self) -> tuple[int | None, str | None]:
        try:
            parts = self.path.read_text().split()
            return int(parts[0]), parts[1] if len(parts) > 1 else None
        except (OSError, ValueError, IndexError):
            return None, None

    def holder(self, settle_s: float = 0.5) -> int | None:
        """The PID written by the process holding the lock (None if unknown: it may be writing it right now)."""
        deadline = time.monotonic() + settle_s
        while True:
            pid, _ = self._read_holder()
            if pid is not None or time.monotonic() >= deadline:
                return pid
            time.sleep(0.02)

    def acquire(
        self, on_wait: Callable[[int | None], None] | None = None, poll_s: float = 0.1, timeout_s: float | None = None
    ) -> None:
        """Take the lock, waiting as long as another process holds it; ``on_wait(holder pid)`` once if it must wait.

        ``timeout_s``: raise TimeoutError after waiting that long (None: wait for as long as the holder lives).
        """
        if self.try_acquire():
            return
        if on_wait is not None:
            on_wait(self.holder())
        started = time.monotonic()
        while not self.try_acquire():
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{self.path} is still held by pid {self.holder()}")
            time.sleep(poll_s)

    def release(self) -> None:
        """Give the lock up (its file is removed); a no-op when not held."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # while still holding it: see the module docstring
            os.close(self._fd)
            self._fd = None
        if self._exclusive_file:
            self.path.unlink(missing_ok=True)
            self._exclusive_file = False

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


@contextlib.contextmanager
def locked(
    path: str | os.PathLike, on_wait: Callable[[int | None], None] | None = None, poll_s: float = 0.1
) -> Iterator[FileLock]:
    """Hold the lock on ``path`` for the block, waiting for another holder first (``on_wait(pid)`` once)."""
    lock = FileLock(path)
    lock.acquire(on_wait, poll_s)
    try:
        yield lock
    finally:
        lock.release()
