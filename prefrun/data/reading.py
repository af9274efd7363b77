"""Reading a local data file row by row: .jsonl streamed a line at a time, .json, .parquet, .csv.

Each reader yields (where, row): where names the line for messages (" (line 12)"), row is the parsed
value (the loader checks that it is an object). A JSONL file is read one line at a time and each line
parsed on its own, so a file is never held whole (a 10 MB line: its text and its parsed row), and a
byte that is not UTF-8 is reported with its line and byte offset instead of a bare UnicodeDecodeError:

    prefs.jsonl line 3: byte 0xe9 at byte offset 141 is not UTF-8; re-encode the file as UTF-8 ...
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefrun.errors import PrefrunError

Lines = Iterator[tuple[str, Any]]


def read_rows(path: Path) -> Lines:
    """The rows of a local file, by its extension; one-line errors for a missing file or a bad extension."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise PrefrunError(f"dataset.path {path}: unknown extension {path.suffix!r}; use one of {', '.join(READERS)}")
    if not path.is_file():
        raise PrefrunError(
            f"dataset.path {path}: no such file (resolved to {path.absolute()}); "
            "set dataset.path to an existing file (absolute, or relative to the working directory)"
        )
    return reader(path)


def not_utf8(path: Path, line: int, offset: int, byte: int) -> PrefrunError:
    """The one-line error for a byte that is not UTF-8 (offset counted from the start of the file)."""
    return PrefrunError(
        f"{path} line {line}: byte 0x{byte:02x} at byte offset {offset} is not UTF-8; re-encode the file as "
        f"UTF-8 (e.g. iconv -f <its encoding> -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}) and point "
        "dataset.path at the result"
    )


def first_bad_byte(path: Path) -> PrefrunError:
    """The error naming the first byte of the file that is not UTF-8: its line and byte offset."""
    offset = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return not_utf8(path, n, offset + e.start, raw[e.start])
            offset += len(raw)
    return PrefrunError(f"{path}: not UTF-8; re-encode the file as UTF-8")  # a sequence cut across lines


def _read_jsonl(path: Path) -> Lines:
    # Text mode decodes in chunks as it reads, so a 10 MB line is held about twice (its text and the parsed
    # row), not also as bytes; only a file that fails to decode is read again, in binary, to locate the byte.
    try:
        with path.open(encoding="utf-8-sig", newline="\n") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = _parsed(line, path, n)
                del line  # the parsed row holds the text; the line need not outlive it
                yield f" (line {n})", row
    except UnicodeDecodeError:
        raise first_bad_byte(path) from None


def _parsed(line: str, path: Path, n: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise PrefrunError(f"{path} line {n}: not valid JSON ({e.msg}); each line holds one object") from None


def _read_json(path: Path) -> Lines:
    try:
        with path.open(encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise PrefrunError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise first_bad_byte(path) from None
    if not isinstance(data, list):
        raise PrefrunError(f"{path}: a .json dataset must be a list of row objects (or use .jsonl)")
    return (("", row) for row in data)


def _read_parquet(path: Path) -> Lines:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=_BATCH)  # a batch of rows at a time
    except (pa.ArrowException, OSError) as e:
        reason = (str(e).strip().splitlines() or [""])[0]
        raise PrefrunError(f"{path}: not a readable Parquet file ({reason}); check the file or its extension") from None
    for batch in batches:
        yield from (("", row) for row in batch.to_pylist())


def _read_csv(path: Path) -> Lines:
    import pandas as pd

    # Read whole: pandas infers each column's type from all of its values (chunks could disagree).
    try:
        frame = pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError:
        raise first_bad_byte(path) from None
    return ((f" (line {i + 2})", row) for i, row in enumerate(frame.to_dict("records")))


_BATCH = 4096
READERS: dict[str, Callable[[Path], Lines]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".parquet": _read_parquet,
    ".csv": _read_csv,
}
