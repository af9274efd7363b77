"""A full disk, told as one line: which device, which directory, how much is free.

A full disk reaches a run in several forms: an ``OSError`` with errno ENOSPC (or EDQUOT, a quota), a
safetensors error whose text carries "No space left on device", and torch.save's
``RuntimeError: [enforce fail at inline_container.cc:…] … PytorchStreamWriter failed writing file …``, which
names neither the cause nor the file. ``no_space_error`` recognises them (through the exception's chain) and
turns them into a PrefrunError naming the device, its mount point, the free space and the directory written.
torch's error carries no errno, so it counts as a full disk only where one of the run's directories has
less than ``LOW_SPACE_BYTES`` free or is 99% full.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from prefrun.errors import PrefrunError

LOW_SPACE_BYTES = 1 << 30
SPACE_TEXTS = ("no space left on device", "storagefull", "os error 28", "disk quota exceeded")
TORCH_WRITE_TEXTS = ("inline_container.cc", "pytorchstreamwriter failed writing", "file write failed")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def mount_of(path: str | os.PathLike) -> tuple[str, str]:
    """(device, mount point) of the file system holding ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    real = os.path.realpath(path)
    best = ("", "/")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                device, mount = line.split()[:2]
                mount = mount.replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[1]):
                    best = (device, mount)
    except OSError:  # not Linux: walk up to the mount point
        mount = real
        while not os.path.ismount(mount):
            mount = os.path.dirname(mount)
        best = ("", mount)
    return best


def free_bytes(path: str | os.PathLike) -> tuple[int, int]:
    """(free, total) bytes of the file system holding ``path``."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.free, usage.total


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def is_full(path: str | os.PathLike) -> bool:
    free, total = free_bytes(path)
    return free < LOW_SPACE_BYTES or free < 0.01 * total


def no_space_error(exc: BaseException, paths: list[str | os.PathLike]) -> PrefrunError | None:
    """A one-line PrefrunError when ``exc`` comes from a full disk, else None.

    ``paths``: the directories the run writes (run directory, cache); the message names the one that is full
    (the file the error names first, when it names one).
    """
    certain = quota = torch_write = False
    named = None
    for e in _chain(exc):
        text = str(e).lower()
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            certain, quota = True, quota or e.errno == errno.EDQUOT
            named = named or e.filename
        elif any(t in text for t in SPACE_TEXTS):
            certain, quota = True, quota or "quota" in text
        torch_write = torch_write or any(t in text for t in TORCH_WRITE_TEXTS)
    if not (certain or torch_write):
        return None
    candidates = [Path(named)] if named else []
    candidates += [Path(p) for p in paths]
    full = [p for p in candidates if is_full(p)]
    if not full and not certain:
        return None  # torch failed to write, but not for lack of space: its own error says more
    where = (full or candidates or [Path.cwd()])[0]
    device, mount = mount_of(where)
    free, _ = free_bytes(where)
    what = "disk quota exceeded" if quota else "no space left"
    return PrefrunError(
        f"{what} on {device or mount} (mounted at {mount}, {_size(free)} free) while writing {where}: "
        "free space there, or point paths.output_dir / paths.cache_dir at a disk with room, then rerun "
        "the same command (a partial run resumes from its last complete checkpoint)"
    )
