"""to_pairs and to_unpaired on hand-checked lists: every mode, ties dropped, all-equal lists counted."""

from __future__ import annotations

import pytest

from prefrun.data.pairs import joint_pairs, to_pairs, to_unpaired
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


# --- joint preferences (DOVE): each response may answer its own prompt ---------------------------------


def test_per_response_prompts_follow_their_responses_into_pairs_and_unpaired_records():
    joint = {"prompt": "x1", "prompts": ["x1", "x2", "x3"], "responses": ["a", "b", "c"], "scores": [1.0, 3.0, 2.0]}
    (pair,), _ = to_pairs([joint], "best_worst")
    assert pair["responses"] == ["b", "a"] and pair["prompts"] == ["x2", "x1"] and pair["prompt"] == "x2"
    unpaired, _ = to_unpaired([joint], "top_bottom")
    picked = [(r["prompt"], r["responses"][0], r["labels"][0]) for r in unpaired]
    assert picked == [("x2", "b", True), ("x1", "a", False)]


def test_joint_pairs_compare_responses_to_different_prompts_higher_score_first():
    records = [
        {"prompt": f"x{i}", "responses": [f"y{i}a", f"y{i}b"], "scores": [float(i), float(i) + 0.5]} for i in range(5)
    ]
    pairs = joint_pairs(records, 40, seed=0)
    assert len(pairs) == 40
    score = {(r["prompt"], y): s for r in records for y, s in zip(r["responses"], r["scores"])}
    for pair in pairs:
        (xw, xl), (yw, yl) = pair["prompts"], pair["responses"]
        assert xw != xl and yw.startswith(xw.replace("x", "y")) and yl.startswith(xl.replace("x", "y"))
        assert pair["scores"] == [score[(xw, yw)], score[(xl, yl)]] and pair["scores"][0] > pair["scores"][1]
        assert pair["prompt"] == xw
    assert joint_pairs(records, 40, seed=0) == pairs  # a fixed seed gives the same data (the reference cache key)


def test_joint_pairs_skip_ties_and_stop_on_all_tied_data():
    tied = [{"prompt": f"x{i}", "responses": ["y"], "scores": [1.0]} for i in range(3)]
    assert joint_pairs(tied, 5, seed=0) == []
    with pytest.raises(PrefrunError, match="at least 2 prompts"):
        joint_pairs(tied[:1], 5, seed=0)


def test_records_of_one_text_to_one_prompt_are_dropped_and_counted():
    from prefrun.data.pairs import drop_identical

    same = {"prompt": "p", "responses": ["a", "a"], "scores": [1.0, 0.0]}
    three = {"prompt": "p", "responses": ["a", "a", "a"], "scores": [2.0, 1.0, 0.0]}
    repeat = {"prompt": "p", "responses": ["a", "a", "b"], "scores": [2.0, 1.0, 0.0]}  # not all one text: kept
    joint = {"prompt": "x", "prompts": ["x", "z"], "responses": ["a", "a"], "scores": [1.0, 0.0]}  # two prompts
    single = {"prompt": "p", "responses": ["a"], "scores": [1.0], "labels": [True]}  # K = 1: nothing to compare
    assert drop_identical([same, three, repeat, joint, single]) == ([repeat, joint, single], 2)
