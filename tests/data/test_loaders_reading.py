"""Reading files: non-finite scores, bytes that are not UTF-8, and a long line read without holding the file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from prefrun.data import reading
from prefrun.data.loaders import load_records
from prefrun.data.records import validate_record
from prefrun.errors import PrefrunError

SCORED = {"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": "sc", "score_rejected": "sr"}


def pair_cfg(path: Path, **fields: object) -> dict:
    return {"name": "t", "path": str(path), "schema": "pairwise", "fields": fields}


# ---------------------------------------------------------------- non-finite scores


@pytest.mark.parametrize("text", ["Infinity", "-Infinity", '"inf"', '"-inf"', '"nan"', '"Infinity"', "1e999"])
def test_a_non_finite_score_names_file_line_and_field(tmp_path, text):
    path = tmp_path / "d.jsonl"
    good = '{"p": "q", "c": "a", "r": "b", "sc": 1, "sr": 0}\n'
    path.write_text(good + f'{{"p": "q", "c": "a", "r": "b", "sc": {text}, "sr": 0}}\n')
    with pytest.raises(PrefrunError) as err:
        load_records(pair_cfg(path, **SCORED), "train")
    message = str(err.value)
    assert message.startswith(f"{path} row 1 (line 2): field 'sc' (dataset.fields.score_chosen) is ")
    assert "not a finite number" in message and "fix the value or drop the row" in message
    assert "\n" not in message


def test_non_finite_scores_in_list_and_score_column_schemas(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text(json.dumps({"q": "p", "items": [{"t": "a", "s": 1}, {"t": "b", "s": float("inf")}]}) + "\n")
    fields = {"prompt": "q", "responses": "items", "text": "t", "score": "s"}
    cfg = {"path": str(path), "schema": "list", "fields": fields}
    with pytest.raises(PrefrunError, match=r"row 0 \(line 1\) items\[1\]: field 's' \(dataset.fields.score\) is inf"):
        load_records(cfg, "train")
    path = tmp_path / "s.jsonl"
    path.write_text('{"q": "p", "a": "x", "b": "y", "scores": [1, -Infinity]}\n')
    cfg = {"path": str(path), "schema": "scored_responses", "fields": {"prompt": "q", "responses": ["a", "b"]}}
    cfg["fields"]["scores"] = "scores"
    with pytest.raises(PrefrunError, match=r"s.jsonl row 0 \(line 1\): a score is -inf, not a finite number"):
        load_records(cfg, "train")
    (tmp_path / "d.csv").write_text("p,c,r,sc,sr\nq,a,b,1,0\nq,a,b,inf,0\n")
    with pytest.raises(PrefrunError, match=r"d.csv row 1 \(line 3\): field 'sc' .* is inf, not a finite number"):
        load_records(pair_cfg(tmp_path / "d.csv", **SCORED), "train")


def test_a_record_with_an_infinite_score_is_invalid():
    validate_record({"prompt": "p", "responses": ["a", "b"], "scores": [1.0, 0.0]}, "r")
    for bad in (math.inf, -math.inf, math.nan, None):
        with pytest.raises(PrefrunError, match=r"^r: a score is .*: missing, NaN or infinite; scores must be finite"):
            validate_record({"prompt": "p", "responses": ["a", "b"], "scores": [1.0, bad]}, "r")


# ---------------------------------------------------------------- not UTF-8


def latin1_file(path: Path) -> tuple[Path, int]:
    """Two good lines and a third with "é" in Latin-1; the offset of that byte, counted here independently."""
    data = (
        b'{"c": "q a", "r": "q b"}\n'
        + '{"c": "q ü", "r": "q b"}\n'.encode()
        + '{"c": "q café", "r": "q b"}\n'.encode("latin-1")
    )
    path.write_bytes(data)
    return path, data.index(b"\xe9")


def test_a_byte_that_is_not_utf8_names_file_line_offset_and_the_fix(tmp_path):
    path, offset = latin1_file(tmp_path / "d.jsonl")
    with pytest.raises(PrefrunError) as err:
        load_records(pair_cfg(path, chosen="c", rejected="r"), "train")
    assert str(err.value) == (
        f"{path} line 3: byte 0xe9 at byte offset {offset} is not UTF-8; re-encode the file as UTF-8 "
        f"(e.g. iconv -f <its encoding> -t UTF-8 d.jsonl > d.utf8.jsonl) and point dataset.path at the result"
    )


@pytest.mark.parametrize(
    ("suffix", "head", "line"),
    [(".csv", b"c,r\nq a,q b\n", 3), (".json", b'[{"c": "q a", "r": "q b"},\n', 2)],
)
def test_not_utf8_in_csv_and_json_files(tmp_path, suffix, head, line):
    path = tmp_path / f"d{suffix}"
    tail = "q café,q b\n" if suffix == ".csv" else '{"c": "q café", "r": "q b"}]\n'
    path.write_bytes(head + tail.encode("latin-1"))
    offset = path.read_bytes().index(b"\xe9")
    with pytest.raises(PrefrunError, match=rf"d\{suffix} line {line}: byte 0xe9 at byte offset {offset} is not UTF-8"):
        load_records(pair_cfg(path, chosen="c", rejected="r"), "train")


def test_a_utf8_byte_order_mark_is_read_as_utf8(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + '{"c": "q ü", "r": "q b"}\n'.encode())
    [record] = load_records(pair_cfg(path, chosen="c", rejected="r"), "train")
    assert record["responses"] == [" ü", " b"]


# ---------------------------------------------------------------- a long line


def test_jsonl_rows_come_one_line_at_a_time(tmp_path):
    """The reader yields the first row before a later line is read: a broken line 3 is not seen yet."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": \n')
    rows = reading.read_rows(path)
    assert next(rows) == (" (line 1)", {"a": 1}) and next(rows) == (" (line 2)", {"a": 2})
    with pytest.raises(PrefrunError, match="line 3: not valid JSON"):
        next(rows)


def test_a_long_line_is_held_about_twice_not_several_times(tmp_path):
    """Peak memory of a process loading a 4 MB line grows by at most 4× the line (its text and its parsed row)."""
    path = tmp_path / "big.jsonl"
    size = 4 * 1024 * 1024
    path.write_text(json.dumps({"q": "p", "c": "x" * size, "r": "y"}) + "\n")
    child = (
        "import resource, sys; from prefrun.data.loaders import load_records; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        f"load_records({{'path': {str(path)!r}, 'fields': {{'prompt': 'q', 'chosen': 'c', 'rejected': 'r'}}}}, 'x'); "
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)"
    )
    grown = int(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout)
    assert grown < 4 * size, f"loading a {size}-byte line grew peak RSS by {grown} bytes"


def test_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "d.parquet").write_text("not parquet")
    with pytest.raises(PrefrunError, match=r"d.parquet: not a readable Parquet file \(.*\); check the file"):
        load_records(pair_cfg(tmp_path / "d.parquet", chosen="c", rejected="r"), "train")
