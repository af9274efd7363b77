"""to_pairs and to_unpaired on hand-checked lists: every mode, ties dropped, all-equal lists counted."""

from __future__ import annotations

import pytest

from prefrun.data.pairs import to_pairs, to_unpaired
from prefrun.errors import PrefrunError

# scores [3, 2, 2, 1]: b and c tie
LIST = {"prompt": "p", "responses": ["a", "b", "c", "d"], "scores": [3.0, 2.0, 2.0, 1.0], "user": "u1"}
FLAT = {"prompt": "q", "responses": ["x", "y", "z"], "scores": [1.0, 1.0, 1.0]}


def pairs_of(mode: str, record: dict) -> list[tuple[str, str]]:
    pairs, _ = to_pairs([record], mode)
    for pair in pairs:
        assert pair["scores"][0] > pair["scores"][1]
    return [tuple(pair["responses"]) for pair in pairs]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("best_worst", [("a", "d")]),
        ("all", [("a", "b"), ("a", "c"), ("a", "d"), ("b", "d"), ("c", "d")]),  # (b, c) tied: dropped
        ("adjacent", [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]),
        ("best_vs_rest", [("a", "b"), ("a", "c"), ("a", "d")]),
    ],
)
def test_each_pair_mode_on_a_hand_checked_list(mode, expected):
    assert pairs_of(mode, LIST) == expected


def test_pairs_carry_scores_prompt_and_other_keys_and_leave_the_input_alone():
    pairs, dropped = to_pairs([LIST], "best_worst")
    assert pairs == [{"prompt": "p", "user": "u1", "responses": ["a", "d"], "scores": [3.0, 1.0]}]
    assert dropped == 0
    assert LIST["responses"] == ["a", "b", "c", "d"]


def test_a_pair_in_the_wrong_order_is_turned_around_and_a_good_pair_kept():
    assert pairs_of("best_worst", {"prompt": "p", "responses": ["l", "w"], "scores": [0.0, 1.0]}) == [("w", "l")]
    good = {"prompt": "p", "responses": ["w", "l"], "scores": [1.0, 0.0]}
    assert to_pairs([good], "all") == ([good], 0)


def test_ties_with_the_best_are_never_paired():
    record = {"prompt": "p", "responses": ["a", "b", "c"], "scores": [2.0, 2.0, 1.0]}
    assert pairs_of("best_vs_rest", record) == [("a", "c")]
    assert pairs_of("all", record) == [("a", "c"), ("b", "c")]
    assert pairs_of("adjacent", record) == [("a", "c"), ("b", "c")]


@pytest.mark.parametrize("mode", ["best_worst", "all", "adjacent", "best_vs_rest"])
def test_an_all_equal_list_gives_no_pair_and_is_counted(mode):
    single = {"prompt": "s", "responses": ["only"], "scores": [5.0]}
    pairs, dropped = to_pairs([FLAT, LIST, single], mode)
    assert dropped == 2
    assert {pair["prompt"] for pair in pairs} == {"p"}


def test_unpaired_threshold_labels_every_response():
    record = {"prompt": "p", "responses": ["a", "b", "c"], "scores": [3.0, 2.0, 1.0]}
    out, dropped = to_unpaired([record], "threshold", 2.0)
    assert out == [
        {"prompt": "p", "responses": ["a"], "scores": [3.0], "labels": [True]},
        {"prompt": "p", "responses": ["b"], "scores": [2.0], "labels": [True]},
        {"prompt": "p", "responses": ["c"], "scores": [1.0], "labels": [False]},
    ]
    assert dropped == 0
    assert [r["labels"] for r in to_unpaired([FLAT], "threshold", threshold=1.5)[0]] == [[False]] * 3


def test_unpaired_top_bottom_and_all_equal_lists():
    out, dropped = to_unpaired([LIST, FLAT], "top_bottom")
    assert out == [
        {"prompt": "p", "user": "u1", "responses": ["a"], "scores": [3.0], "labels": [True]},
        {"prompt": "p", "user": "u1", "responses": ["d"], "scores": [1.0], "labels": [False]},
    ]
    assert dropped == 1


def test_unknown_modes_and_a_missing_threshold():
    with pytest.raises(PrefrunError, match="pair mode 'best' is unknown; use one of best_worst, all"):
        to_pairs([LIST], "best")
    with pytest.raises(PrefrunError, match="unpaired mode 'split' is unknown"):
        to_unpaired([LIST], "split")
    with pytest.raises(PrefrunError, match="needs a threshold"):
        to_unpaired([LIST], "threshold")
