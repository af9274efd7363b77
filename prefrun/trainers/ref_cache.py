"""Reference log-probs shared across the runs of a sweep, keyed by content.

The key hashes everything the numbers depend on: the reference model (its weight files' bytes for a
local directory, its hub id + revision otherwise), the tokenizer (vocabulary and chat template), the
tokenized dataset (prompt and response token ids, which carry the max lengths and truncation) and
the dtype. Change any of them and the key changes. Entries are written to a temporary file and
renamed, so a reader never sees a torn entry, and a failed write (a full disk) removes its temporary.
``load_or_compute`` holds a lock per key around "look up → compute → publish": a second run that needs
the same entry meanwhile waits for the first one's instead of computing it again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefrun.results.files import temp_path
from prefrun.runtime.locks import FileLock


def _hash_file(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def stack_fingerprint() -> dict[str, str | None]:
    """The library versions whose numerics a cached result depends on (kernels, TRL's log-prob code)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "trl"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_fingerprint(path: str, revision: str | None = None) -> str:
    """sha256 of a local model directory's weight files, or of a hub id + revision.

    Hashing a 7B model reads ~15 GB, and a run asks for the fingerprint several times (SFT key, reference
    cache, curriculum stages): it is hashed once per process for as long as the files' names, sizes and
    modification times stay the same.
    """
    local = Path(path)
    if not local.is_dir():
        return hashlib.sha256(f"{path}@{revision}".encode()).hexdigest()
    named = ("config.json", "adapter_config.json")
    files = sorted(p for p in local.iterdir() if p.suffix in {".safetensors", ".bin"} or p.name in named)
    return _hash_weight_files(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=64)
def _hash_weight_files(files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in files:
        h.update(Path(name).name.encode())
        _hash_file(h, Path(name))
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    blob = json.dumps(
        {
            "vocab": sorted(tokenizer.get_vocab().items()),
            "template": tokenizer.chat_template,
            "eos": tokenizer.eos_token_id,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def dataset_fingerprint(dataset: Any) -> str:
    h = hashlib.sha256()
    columns = dataset.column_names if hasattr(dataset, "column_names") else dataset  # a Dataset or a dict of columns
    per_response = dataset["response_prompt_ids"] if "response_prompt_ids" in columns else None
    for i, (prompt_ids, response_ids) in enumerate(zip(dataset["prompt_ids"], dataset["response_ids"])):
        h.update(json.dumps([per_response[i] if per_response else prompt_ids, response_ids]).encode())
    return h.hexdigest()


class ReferenceCache:
    """``load(dataset)`` → list of K floats per record, or None; ``store(dataset, values)``."""

    def __init__(
        self, cache_dir: str | os.PathLike, model_key: str, tokenizer_key: str, dtype: str, **settings: object
    ):
        """``settings``: anything else the numbers depend on (packing, joint scoring), part of the key."""
        self.dir = Path(cache_dir)
        self.base_key = {
            "model": model_key,
            "tokenizer": tokenizer_key,
            "dtype": dtype,
            "stack": stack_fingerprint(),
            **settings,
        }
        self.hits = 0
        self.misses = 0

    def path_for(self, dataset: Any) -> Path:
        key = {**self.base_key, "data": dataset_fingerprint(dataset)}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.dir / f"ref-{digest}.json"

    def load(self, dataset: Any) -> list[list[float]] | None:
        return self._load(self.path_for(dataset), len(dataset))

    def _load(self, path: Path, n: int) -> list[list[float]] | None:
        values = json.loads(path.read_text()) if path.exists() else None
        if values is None or len(values) != n:
            self.misses += 1
            return None
        self.hits += 1
        return values

    def store(self, dataset: Any, values: list[list[float]]) -> None:
        self._store(self.path_for(dataset), values)

    def _store(self, path: Path, values: list[list[float]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        try:
            with open(tmp, "x") as f:
                json.dump(values, f)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # gone after the rename; a write that failed leaves nothing behind

    def load_or_compute(
        self,
        dataset: Any,
        compute: Callable[[], list[list[float]]],
        *,
        store: bool = True,
        label: str = "reference log-probs",
    ) -> tuple[list[list[float]], bool]:
        """(values, whether they came from the cache): the entry, or ``compute()`` stored as the entry.

        With ``store`` the look-up, the computation and the publication hold the key's lock, so a second run
        needing this entry at the same time waits (saying so: ``<label>: waiting for another run (pid N)
        computing key …``) and then reads the first one's. ``store=False`` (ranks that only read) never waits.
        """
        path = self.path_for(dataset)  # hashes the data: once
        cached = self._load(path, len(dataset))
        if cached is not None or not store:
            return (cached, True) if cached is not None else (compute(), False)
        from prefrun.results.progress import stage_message

        lock = FileLock(path.with_name(f".{path.stem}.lock"))
        key = path.stem.removeprefix("ref-")

        def waiting(pid: int | None) -> None:
            stage_message(f"{label}: waiting for another run (pid {pid or 'unknown'}) computing key {key}")

        lock.acquire(on_wait=waiting)
        try:
            self.misses -= 1  # counted again by this look-up: a wait is no miss, a computation one
            cached = self._load(path, len(dataset))
            if cached is not None:
                return cached, True
            values = compute()
            self._store(path, values)
            return values, False
        finally:
            lock.release()
