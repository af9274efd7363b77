"""Atomic file writes, their temporary files, and the self-description of a run (env.json).

Everything written atomically goes through a temporary sibling named by ``temp_path``: hidden, and carrying
the writer's PID and host (``.<name>.tmp-<pid>-<random>@<host>``). A writer that fails removes its
temporary (try/finally); one killed outright cannot, so ``remove_stale_temporaries`` removes, at the next
start, those whose writer is dead on this host (or, written on another host, older than a day), and the
lock files (``prefrun.runtime.locks``) nobody holds any more.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from prefrun.runtime.locks import FileLock, pid_alive

PACKAGES = [
    "prefrun",
    "torch",
    "transformers",
    "trl",
    "datasets",
    "accelerate",
    "peft",
    "hydra-core",
    "omegaconf",
    "wandb",
    "tokenizers",
    "numpy",
]


TEMP_MARK = ".tmp-"
_TEMP = re.compile(r"\.tmp-(?P<pid>\d+)-[0-9a-f]+@(?P<host>[^/@]+)$")
# Temporaries of writers that do not carry a host: `<name>.tmp<pid>` (model and tiny-model saving) and the
# `.ref-XXXXXXXX` files earlier versions of the reference cache left.
_TEMP_NO_HOST = re.compile(r"\.tmp(?P<pid>\d+)$")
_TEMP_NO_PID = re.compile(r"^\.ref-[A-Za-z0-9_]{8}$")
STALE_AFTER_S = 24 * 3600.0  # a temporary from another host (its PID cannot be checked here)
STALE_NO_HOST_AFTER_S = 3600.0  # one whose name has no host: its PID is dead here and it is this old


def temp_path(path: str | os.PathLike) -> Path:
    """A hidden temporary sibling of ``path`` naming this process: ``.<name>.tmp-<pid>-<random>@<host>``."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}@{socket.gethostname()}")


def is_stale_temporary(path: Path, *, exclusive: bool = False, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary whose writer is gone.

    ``exclusive``: the caller holds the directory (a locked run directory), so every temporary not written
    by this process is stale.
    """
    name = path.name
    match = _TEMP.search(name) or _TEMP_NO_HOST.search(name)
    if match is None and not _TEMP_NO_PID.match(name):
        return False
    pid = int(match["pid"]) if match else None
    if pid == os.getpid():
        return False
    if exclusive:
        return True
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    host = match.groupdict().get("host") if match else None
    if host is not None:
        return not pid_alive(pid) if host == socket.gethostname() else age > STALE_AFTER_S
    return age > STALE_NO_HOST_AFTER_S and (pid is None or not pid_alive(pid))


def remove_stale_temporaries(directory: str | os.PathLike, *, depth: int = 1, exclusive: bool = False) -> list[Path]:
    """Remove the stale temporaries (files or folders) in ``directory`` and ``depth - 1`` levels below it."""
    removed: list[Path] = []
    root = Path(directory)
    try:
        entries = list(root.iterdir())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return removed
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".lock") and entry.is_file():
            lock = FileLock(entry)  # a lock file its holder's death left: free, so taking and releasing removes it
            if lock.try_acquire():
                lock.release()
                removed.append(entry)
        elif is_stale_temporary(entry, exclusive=exclusive):
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except FileNotFoundError:  # another process cleaned it first
                continue
            except OSError:  # not ours to remove (permissions): leave it
                continue
            removed.append(entry)
        elif depth > 1 and entry.is_dir() and not entry.is_symlink():
            removed += remove_stale_temporaries(entry, depth=depth - 1, exclusive=exclusive)
    return removed


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "x") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; left by a failed write otherwise


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def environment() -> dict[str, Any]:
    """Versions, git commit, command line and hardware: what reproducing this run needs."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    hardware: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch

        hardware["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            hardware["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        hardware["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": sys.argv,
        "hardware": hardware,
    }
