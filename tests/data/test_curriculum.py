"""Curry-DPO pairs: chosen = best, ordered easy → hard by score gap, shuffled only within a stage."""

from __future__ import annotations

from prefrun.data.curriculum import curriculum_stages, gap_buckets


def lists(n: int) -> list[dict]:
    # four rated responses per prompt, R1 > R2 > R3 > R4, in a scrambled order
    return [
        {"prompt": f"p{i}", "responses": ["r3", "r1", "r4", "r2"], "scores": [2.0, 9.0, 1.0, 5.0]} for i in range(n)
    ]


def test_every_pair_has_the_best_response_as_chosen_and_easiest_first():
    buckets = gap_buckets(lists(1))
    assert [b[0]["responses"] for b in buckets] == [["r1", "r4"], ["r1", "r3"], ["r1", "r2"]]
    assert [b[0]["scores"] for b in buckets] == [[9.0, 1.0], [9.0, 2.0], [9.0, 5.0]]


def test_tied_responses_make_no_pair():
    record = {"prompt": "p", "responses": ["a", "b", "c"], "scores": [3.0, 3.0, 1.0]}
    pairs = [p["responses"] for b in gap_buckets([record]) for p in b]
    assert pairs == [["a", "c"]]
    assert gap_buckets([{"prompt": "p", "responses": ["a", "b"], "scores": [1.0, 1.0]}]) == []


def test_stages_hold_consecutive_difficulty_buckets_and_shuffle_only_within():
    stages = curriculum_stages(lists(50), stages=3, seed=0)
    assert [{tuple(p["responses"]) for p in s} for s in stages] == [{("r1", "r4")}, {("r1", "r3")}, {("r1", "r2")}]
    assert [p["prompt"] for p in stages[0]] != [f"p{i}" for i in range(50)]  # shuffled within the stage
    again = curriculum_stages(lists(50), stages=3, seed=0)
    assert [[p["prompt"] for p in s] for s in again] == [[p["prompt"] for p in s] for s in stages]


def test_fewer_stages_than_buckets_merge_neighbours():
    record = {"prompt": "p", "responses": list("abcdefgh"), "scores": [8, 7, 6, 5, 4, 3, 2, 1]}
    sizes = [len(s) for s in curriculum_stages([record], stages=3, seed=0)]
    assert sizes == [3, 2, 2]  # 7 buckets of one pair each


def test_no_stage_count_gives_one_set_per_bucket_whatever_k_the_first_list_has():
    pair = {"prompt": "p", "responses": ["a", "b"], "scores": [2.0, 1.0]}
    sets = curriculum_stages([pair, *lists(2)], stages=None, seed=0)
    assert len(sets) == len(gap_buckets([pair, *lists(2)])) == 3  # K = 2 first, K = 4 later: 3 gap buckets
