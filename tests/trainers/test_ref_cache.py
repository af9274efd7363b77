"""The reference log-prob cache: a hit only when model, tokenizer, tokenized data and dtype are all unchanged.

Every part of the key is changed in turn (a miss each time); two processes filling the same entry at once
never let a reader see a partial file; two runs needing one entry at once compute it once. Whether to use the
cache at all (``cache.reference=off``) is the caller's decision and is not tested here.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from datasets import Dataset

from prefrun.data.synthetic import SortTask, preference_records
from prefrun.data.tokenize import tokenize_record
from prefrun.trainers.ref_cache import ReferenceCache, model_fingerprint, tokenizer_fingerprint

DTYPE = "torch.float32"


def _tokenized(tokenizer, max_prompt_len: int = 64, max_response_len: int = 64) -> Dataset:
    records = preference_records(SortTask(), 4, k=2, max_swaps=3, corrupt_prob=0.0, seed=0)
    return Dataset.from_list([tokenize_record(r, tokenizer, max_prompt_len, max_response_len) for r in records])


def _values(dataset) -> list[list[float]]:
    return [[-1.5 - i, -2.25 - i] for i in range(len(dataset))]


@pytest.fixture()
def tokenizer(micro_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model_dir)


@pytest.fixture()
def stored(micro_model_dir, tokenizer, tmp_path):
    """A cache directory holding one entry for (micro model, its tokenizer, the tokenized data, float32)."""
    dataset = _tokenized(tokenizer)
    parts = {"model_key": model_fingerprint(str(micro_model_dir)), "tokenizer_key": tokenizer_fingerprint(tokenizer)}
    ReferenceCache(tmp_path / "cache", dtype=DTYPE, **parts).store(dataset, _values(dataset))
    return {**parts, "dtype": DTYPE, "dataset": dataset, "dir": tmp_path / "cache"}


def _probe(stored, **changes) -> tuple[ReferenceCache, list | None]:
    """A fresh cache object over the stored directory with some key parts changed, and what it loads."""
    parts = {key: stored[key] for key in ("model_key", "tokenizer_key", "dtype")}
    dataset = changes.pop("dataset", stored["dataset"])
    cache = ReferenceCache(stored["dir"], **{**parts, **changes})
    return cache, cache.load(dataset)


def _assert_miss(stored, **changes) -> None:
    cache, loaded = _probe(stored, **changes)
    assert loaded is None
    assert (cache.hits, cache.misses) == (0, 1)


def test_unchanged_model_tokenizer_data_and_dtype_hit(stored):
    """Same four parts, a new cache object (a new run of the sweep): the stored values come back exactly."""
    cache, loaded = _probe(stored)
    assert loaded == _values(stored["dataset"])
    assert (cache.hits, cache.misses) == (1, 0)


def test_model_key_depends_on_weight_bytes_not_on_the_directory(micro_model_dir, tmp_path, stored):
    """A copy of the model directory elsewhere has the same fingerprint, so it hits."""
    copy = shutil.copytree(micro_model_dir, tmp_path / "copy")
    assert model_fingerprint(str(copy)) == stored["model_key"]
    assert _probe(stored, model_key=model_fingerprint(str(copy)))[1] is not None


def test_perturbed_model_weights_miss(micro_model_dir, tmp_path, stored):
    """One parameter nudged and saved to a new directory: a different fingerprint, a miss."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    model.save_pretrained(tmp_path / "perturbed")
    perturbed = model_fingerprint(str(tmp_path / "perturbed"))
    assert perturbed != stored["model_key"]
    _assert_miss(stored, model_key=perturbed)


def test_hub_model_key_depends_on_revision():
    """A hub id (not a local directory) is keyed by id and revision."""
    assert model_fingerprint("org/model", "main") != model_fingerprint("org/model", "abc123")
    assert model_fingerprint("org/model", "main") != model_fingerprint("org/other", "main")


def test_tokenizer_with_an_added_token_misses(tokenizer, stored):
    """Adding a token changes the vocabulary, so the tokenizer key changes."""
    tokenizer.add_tokens(["<new_token>"])
    _assert_miss(stored, tokenizer_key=tokenizer_fingerprint(tokenizer))


def test_tokenizer_with_another_chat_template_misses(tokenizer, stored):
    """A different chat template changes the tokenizer key."""
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    _assert_miss(stored, tokenizer_key=tokenizer_fingerprint(tokenizer))


def test_one_changed_token_id_in_the_data_misses(stored):
    """Changing one response token id of one record changes the data key."""
    rows = stored["dataset"].to_list()
    rows[2]["response_ids"][1][0] += 1
    _assert_miss(stored, dataset=Dataset.from_list(rows))


@pytest.mark.parametrize(
    "lengths", [{"max_response_len": 3}, {"max_prompt_len": 4}], ids=["max_response_len", "max_prompt_len"]
)
def test_truncation_by_max_lengths_misses(tokenizer, stored, lengths):
    """Shorter max lengths truncate the tokenized data, so the key changes."""
    truncated = _tokenized(tokenizer, **lengths)
    assert truncated.to_list() != stored["dataset"].to_list()
    _assert_miss(stored, dataset=truncated)


def test_other_dtype_string_misses(stored):
    """Log-probs computed in another dtype (or packing, carried in the same string) are another entry."""
    _assert_miss(stored, dtype="torch.bfloat16")


def test_entry_with_a_different_number_of_records_misses(stored):
    """A stored list whose length disagrees with the dataset is not returned."""
    cache = ReferenceCache(stored["dir"], stored["model_key"], stored["tokenizer_key"], DTYPE)
    cache.store(stored["dataset"], _values(stored["dataset"])[:-1])
    assert cache.load(stored["dataset"]) is None
    assert cache.misses == 1


WRITER = textwrap.dedent(
    """
    import sys
    from prefrun.trainers.ref_cache import ReferenceCache

    cache_dir, n = sys.argv[1], int(sys.argv[2])
    data = {"prompt_ids": [[i, i + 1] for i in range(n)], "response_ids": [[[i], [i, 7]] for i in range(n)]}
    values = [[-1.0 / (i + 3), -2.0 / (i + 7)] for i in range(n)]
    cache = ReferenceCache(cache_dir, "model", "tokenizer", "dtype")
    for _ in range(int(sys.argv[3])):
        cache.store(data, values)
    """
)


def test_concurrent_writers_of_one_entry_never_expose_a_partial_file(tmp_path):
    """Two processes store the same key repeatedly while this one reads: every read is complete and equal."""
    n, repeats = 3000, 25
    dataset = Dataset.from_dict(
        {"prompt_ids": [[i, i + 1] for i in range(n)], "response_ids": [[[i], [i, 7]] for i in range(n)]}
    )
    expected = [[-1.0 / (i + 3), -2.0 / (i + 7)] for i in range(n)]
    cache = ReferenceCache(tmp_path, "model", "tokenizer", "dtype")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n), str(repeats)]) for _ in range(2)]
    reads = 0
    deadline = time.monotonic() + 30
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        loaded = cache.load(dataset)  # a torn file would raise JSONDecodeError or come back short
        if loaded is not None:
            assert loaded == expected
            reads += 1
    assert [w.wait(timeout=30) for w in writers] == [0, 0]
    assert cache.load(dataset) == expected
    assert reads > 0
    assert [p.name for p in tmp_path.iterdir()] == [cache.path_for(dataset).name]  # no temporary files left


def test_model_fingerprint_hashes_the_weights_once_until_a_file_changes(tmp_path, monkeypatch):
    from prefrun.trainers import ref_cache

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    reads = []
    hash_file = ref_cache._hash_file
    monkeypatch.setattr(ref_cache, "_hash_file", lambda h, p: (reads.append(p.name), hash_file(h, p)))
    first = ref_cache.model_fingerprint(str(tmp_path))
    assert ref_cache.model_fingerprint(str(tmp_path)) == first and reads == ["model.safetensors"]
    (tmp_path / "model.safetensors").write_bytes(b"other weights")  # another size: the files changed
    assert ref_cache.model_fingerprint(str(tmp_path)) != first and len(reads) == 2


def _table(n: int = 4) -> Dataset:
    return Dataset.from_dict({"prompt_ids": [[i] for i in range(n)], "response_ids": [[[i], [i, 7]] for i in range(n)]})


def test_two_runs_needing_one_entry_at_once_compute_it_once(tmp_path, monkeypatch):
    """The second asks while the first computes: it waits, says for whom, and reads the first one's values."""
    from prefrun.results import progress

    messages: list[str] = []
    monkeypatch.setattr(progress, "stage_message", lambda text, stream=None: messages.append(text))
    dataset, computed, results = _table(), [], {}
    started = threading.Event()

    def compute(name: str):
        def run() -> list[list[float]]:
            computed.append(name)
            started.set()
            time.sleep(0.3)  # the other run asks meanwhile
            return _values(dataset)

        return run

    def run(name: str) -> None:
        cache = ReferenceCache(tmp_path, "model", "tokenizer", DTYPE)
        results[name] = (*cache.load_or_compute(dataset, compute(name)), cache.hits, cache.misses)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    started.wait(timeout=10)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join(timeout=10)
    second.join(timeout=10)
    assert computed == ["first"]
    assert results["first"] == (_values(dataset), False, 0, 1)
    assert results["second"] == (_values(dataset), True, 1, 0)  # served from the cache, not a miss
    key = ReferenceCache(tmp_path, "model", "tokenizer", DTYPE).path_for(dataset).stem.removeprefix("ref-")
    assert messages == [f"reference log-probs: waiting for another run (pid {os.getpid()}) computing key {key}"]
    assert [p.name for p in tmp_path.iterdir()] == [f"ref-{key}.json"]  # no lock or temporary file left


def test_a_rank_that_only_reads_neither_waits_nor_stores(tmp_path):
    cache = ReferenceCache(tmp_path, "model", "tokenizer", DTYPE)
    values, cached = cache.load_or_compute(_table(), lambda: [[0.0, 0.0]] * 4, store=False)
    assert (values, cached) == ([[0.0, 0.0]] * 4, False) and list(tmp_path.iterdir()) == []


def test_a_write_that_fails_on_a_full_disk_leaves_no_temporary(tmp_path, monkeypatch):
    from prefrun.trainers import ref_cache

    def full(values, f):
        f.write("[[-1.5, ")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ref_cache.json, "dump", full)
    cache = ReferenceCache(tmp_path, "model", "tokenizer", DTYPE)
    with pytest.raises(OSError, match="No space left"):
        cache.load_or_compute(_table(), lambda: _values(_table()))
    assert list(tmp_path.iterdir()) == []  # neither the entry, nor a `.ref-*` temporary, nor the lock
