"""Normalised compression distance and the ZIP-FIT alignment of candidates to a target set.

Cilibrasi & Vitányi 2005, as used by ZIP-FIT (Obbad et al., arXiv 2410.18194, Sec. 3):

    NCD(x, y)   = (C(x ⊕ y) − min(C(x), C(y))) / max(C(x), C(y))
    Alignment(x) = 1 − (1/n) Σ_j NCD(x, t_j)              over the n targets t_j

C is the DEFLATE-compressed length in bytes (stdlib ``zlib``; gzip's container only adds a constant 12
bytes more) and ⊕ is byte concatenation of the UTF-8 texts. The cost is one compression per candidate
and per target (each cached, computed once per distinct string) plus one per (candidate, target) pair, so
large pools are spread over processes.

Level 0 is refused. DEFLATE at level 0 *stores* the bytes without compressing them, so C(x) = |x| + a
constant and NCD(x, t) = max(|x|, |t|) / (max(|x|, |t|) + constant): the "alignment" then ranks the
candidates by length alone, whatever they say. The ``zip-fit`` package's default level is 0.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import zlib
from collections.abc import Sequence

from prefrun.errors import PrefrunError

DEFAULT_LEVEL = 9
MIN_PARALLEL_PAIRS = 200_000  # below this a pool of processes costs more to start than it saves
MAX_CHUNK = 2000  # candidates per task sent to a worker (ZIP-FIT's chunksize)


def check_level(level: int) -> None:
    """A compression level 1–9, or a one-line error (level 0 in particular)."""
    if level == 0 and not isinstance(level, bool):
        raise PrefrunError(
            "data.select.level=0 stores without compressing, so NCD ranks by length; use a level 1-9 "
            "(data.select.level=9)"
        )
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
        raise PrefrunError(f"data.select.level={level!r} must be a zlib compression level 1-9 (data.select.level=9)")


class CompressedLengths:
    """C(s) for each distinct byte string, computed once (a dict from string to length)."""

    def __init__(self, level: int = DEFAULT_LEVEL) -> None:
        self.level = level
        self.cache: dict[bytes, int] = {}

    def __call__(self, data: bytes) -> int:
        length = self.cache.get(data)
        if length is None:
            length = self.cache[data] = len(zlib.compress(data, self.level))
        return length


def _ncd(x: bytes, cx: int, y: bytes, cy: int, level: int) -> float:
    cxy = len(zlib.compress(x + y, level))
    return (cxy - min(cx, cy)) / max(cx, cy)


def ncd(x: str, y: str, level: int = DEFAULT_LEVEL, lengths: CompressedLengths | None = None) -> float:
    """NCD(x, y) of two texts (formula in the module docstring)."""
    check_level(level)
    lengths = lengths or CompressedLengths(level)
    bx, by = x.encode(), y.encode()
    return _ncd(bx, lengths(bx), by, lengths(by), level)


def _alignments(
    candidates: Sequence[str], targets: Sequence[bytes], target_lengths: Sequence[int], level: int
) -> list[float]:
    lengths = CompressedLengths(level)
    out = []
    for text in candidates:
        x = text.encode()
        cx = lengths(x)
        total = sum(_ncd(x, cx, t, ct, level) for t, ct in zip(targets, target_lengths, strict=True))
        out.append(1.0 - total / len(targets))
    return out


_WORKER: tuple[list[bytes], list[int], int] | None = None  # a worker's targets, their lengths and the level


def _init_worker(targets: list[bytes], target_lengths: list[int], level: int) -> None:
    global _WORKER
    _WORKER = (targets, target_lengths, level)


def _align_chunk(chunk: list[str]) -> list[float]:
    assert _WORKER is not None
    return _alignments(chunk, *_WORKER)


def zipfit_alignment(
    candidates: Sequence[str],
    targets: Sequence[str],
    level: int = DEFAULT_LEVEL,
    processes: int | None = None,
    min_parallel_pairs: int = MIN_PARALLEL_PAIRS,
) -> list[float]:
    """ZIP-FIT alignment of each candidate to ``targets``, in the candidates' order.

    ``processes`` (None: every core) workers share the distinct candidates in chunks when the pool has at
    least ``min_parallel_pairs`` (candidate, target) pairs; smaller pools run in this process. Workers are
    forked where the platform can (they only run zlib, so a parent holding torch or CUDA state is safe, and
    no ``__main__`` is re-imported, as spawning would: a script without a main guard or stdin would fail).
    """
    check_level(level)
    if not targets:
        raise PrefrunError("data.select.target: the target set is empty; point it at a dataset with records")
    target_bytes = [t.encode() for t in targets]
    target_lengths = [len(zlib.compress(t, level)) for t in target_bytes]
    unique = list(dict.fromkeys(candidates))  # duplicates cost nothing: scored once, looked up after
    workers = processes or os.cpu_count() or 1
    if workers > 1 and len(unique) * len(targets) >= min_parallel_pairs:
        chunk = max(1, min(MAX_CHUNK, math.ceil(len(unique) / (4 * workers))))  # ~4 chunks a worker: balance
        chunks = [unique[i : i + chunk] for i in range(0, len(unique), chunk)]
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with context.Pool(
            min(workers, len(chunks)), initializer=_init_worker, initargs=(target_bytes, target_lengths, level)
        ) as pool:
            scores = [s for part in pool.map(_align_chunk, chunks) for s in part]
    else:
        scores = _alignments(unique, target_bytes, target_lengths, level)
    by_text = dict(zip(unique, scores, strict=True))
    return [by_text[c] for c in candidates]
