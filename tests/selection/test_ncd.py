"""NCD and the ZIP-FIT alignment: the formula by hand with zlib, the refused level 0, the parallel path."""

from __future__ import annotations

import zlib

import pytest

from prefrun.errors import PrefrunError
from prefrun.selection import ncd as ncd_module
from prefrun.selection.ncd import CompressedLengths, check_level, ncd, zipfit_alignment

CODE_TARGETS = [
    "def add(a, b):\n    return a + b\n",
    "def mul(a, b):\n    result = a * b\n    return result\n",
]
# Two code snippets and two prose strings; the prose is shorter than the code, so a length ranking
# (level 0: longer candidates get lower alignment) puts the prose first.
TOY = [
    "def sub(a, b):\n    result = a - b\n    return result\n\ndef neg(a):\n    return -a\n",
    "def div(a, b):\n    return a / b\n\ndef mod(a, b):\n    result = a % b\n    return result\n",
    "The weather in the valley was mild, and the river ran slow past the old mill.",
    "She read the letter twice, folded it along its creases and put it in a drawer.",
]


def hand_ncd(x: str, y: str, level: int) -> float:
    def c(s: str) -> int:
        return len(zlib.compress(s.encode(), level))

    return (c(x + y) - min(c(x), c(y))) / max(c(x), c(y))


def test_ncd_is_the_formula_computed_by_hand_with_zlib():
    x, y = "sort: 3 1 2 ->", "sort: 9 4 7 1 ->"
    cx, cy, cxy = (len(zlib.compress(s.encode(), 9)) for s in (x, y, x + y))
    assert ncd(x, y, level=9) == pytest.approx((cxy - min(cx, cy)) / max(cx, cy))
    assert ncd(x, y, level=6) == pytest.approx(hand_ncd(x, y, 6))


def test_alignment_is_one_minus_the_mean_ncd_to_the_targets():
    candidates = ["sort: 3 1 2 ->", "hello there, general", "sort: 3 1 2 ->"]
    targets = ["sort: 5 6 1 ->", "sort: 8 2 ->", "sort: 1 2 3 4 ->"]
    expected = [1 - sum(hand_ncd(c, t, 9) for t in targets) / len(targets) for c in candidates]
    assert zipfit_alignment(candidates, targets, level=9, processes=1) == pytest.approx(expected)


def test_compressed_lengths_are_computed_once_per_string():
    lengths = CompressedLengths(9)
    assert lengths(b"abcabc") == len(zlib.compress(b"abcabc", 9))
    lengths(b"abcabc")
    assert list(lengths.cache) == [b"abcabc"]


@pytest.mark.parametrize("level", [0])
def test_level_zero_is_refused_with_the_reason(level):
    with pytest.raises(PrefrunError, match="stores without compressing, so NCD ranks by length"):
        check_level(level)
    with pytest.raises(PrefrunError, match="level=0"):
        zipfit_alignment(["a"], ["b"], level=level)


@pytest.mark.parametrize("level", [10, -1, True, 6.0, "9"])
def test_levels_outside_1_to_9_are_refused(level):
    with pytest.raises(PrefrunError, match="level 1-9"):
        check_level(level)


def test_toy_code_vs_prose_level_9_ranks_code_first():
    scores = zipfit_alignment(TOY, CODE_TARGETS, level=9, processes=1)
    ranked = sorted(range(len(TOY)), key=lambda i: -scores[i])
    assert set(ranked[:2]) == {0, 1}  # both code snippets above both prose strings


def test_toy_code_vs_prose_level_0_ranks_by_length():
    # Why level 0 is refused: DEFLATE's stored blocks make C(s) = |s| + a constant, so the alignment is a
    # function of the candidate's length alone. The private helper skips the level check on purpose.
    targets = [t.encode() for t in CODE_TARGETS]
    scores = ncd_module._alignments(TOY, targets, [len(zlib.compress(t, 0)) for t in targets], 0)
    by_score = sorted(range(len(TOY)), key=lambda i: -scores[i])
    by_length = sorted(range(len(TOY)), key=lambda i: len(TOY[i]))
    assert by_score == by_length
    assert set(by_score[:2]) == {2, 3}  # the prose first: the opposite of level 9


def test_parallel_scores_equal_serial_scores():
    candidates = [f"sort: {i} {i * 7 % 13} {i * 3 % 11} ->" for i in range(60)] + ["an off-task line"] * 3
    targets = ["sort: 1 5 2 ->", "sort: 12 4 ->", "sort: 7 7 1 0 ->"]
    serial = zipfit_alignment(candidates, targets, processes=1)
    parallel = zipfit_alignment(candidates, targets, processes=2, min_parallel_pairs=1)
    assert parallel == serial


def test_an_empty_target_set_is_refused():
    with pytest.raises(PrefrunError, match="target set is empty"):
        zipfit_alignment(["sort: 1 2 ->"], [])
