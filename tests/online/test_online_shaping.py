"""Samples → records: best/worst, all pairs or the list; ties, one response twice and unscored samples dropped."""

from __future__ import annotations

import pytest

from prefrun.errors import PrefrunError
from prefrun.online.shaping import resolve_shape, shape_row, shape_rows


def _row(scores, ids=None):
    k = len(scores)
    return {
        "prompt_ids": [1, 2],
        "token_ids": ids or [[10 + i, 2] for i in range(k)],
        "scores": scores,
        "old_logps": [-1.0 - i for i in range(k)],
        "ref_logps": [-2.0 - i for i in range(k)],
    }


def test_best_worst_takes_the_first_best_against_the_first_worst_with_its_log_probs():
    records, outcome = shape_row(_row([0.5, 1.0, 0.0, 1.0]), "best_worst", with_reference=True)
    assert outcome == "ok" and len(records) == 1
    assert records[0] == {
        "prompt_ids": [1, 2],
        "response_ids": [[11, 2], [12, 2]],
        "scores": [1.0, 0.0],
        "old_logps": [-2.0, -3.0],
        "ref_logps": [-3.0, -4.0],
    }


def test_all_pairs_drop_ties_and_pairs_of_one_response_twice():
    ids = [[10, 2], [11, 2], [10, 2]]  # samples 0 and 2 are one response
    records, _ = shape_row(_row([1.0, 0.0, 0.5], ids), "all", with_reference=False)
    assert [r["scores"] for r in records] == [[1.0, 0.0], [0.5, 0.0]]  # (0, 2) is the same text, never a pair
    assert all("ref_logps" not in r for r in records)
    records, outcome = shape_row(_row([1.0, 1.0, 0.0, 0.0]), "all", with_reference=True)
    assert outcome == "ok" and len(records) == 4  # the two tied pairs are dropped


def test_unscored_samples_leave_the_list_and_a_list_needs_two_distinct_scores():
    records, outcome = shape_row(_row([None, 0.2, float("nan"), 0.7]), "list", with_reference=True)
    assert outcome == "ok" and records[0]["scores"] == [0.2, 0.7] and records[0]["old_logps"] == [-2.0, -4.0]
    assert shape_row(_row([0.3, 0.3, 0.3]), "list", with_reference=True) == ([], "tied")
    assert shape_row(_row([0.3, None, None]), "best_worst", with_reference=True) == ([], "tied")  # one scored sample
    assert shape_row(_row([None, None]), "best_worst", with_reference=True) == ([], "unscored")
    assert shape_row(_row([0.1, 0.9, 0.5]), "list", with_reference=True, min_k=4)[1] == "tied"  # too short a list


def test_counts_add_up():
    rows = [_row([1.0, 0.0]), _row([0.5, 0.5]), _row([None, None]), _row([0.1, 0.2])]
    records, counts = shape_rows(rows, "best_worst", with_reference=True)
    assert (counts.prompts, counts.records, counts.tied, counts.unscored) == (4, 2, 1, 1) and len(records) == 2


def test_the_shape_follows_the_objective_and_a_pairwise_objective_refuses_lists():
    assert resolve_shape("auto", "pairwise") == "best_worst" and resolve_shape("auto", "list") == "list"
    assert resolve_shape("all", "list") == "all"
    with pytest.raises(PrefrunError, match="online.pairs=list gives whole lists"):
        resolve_shape("list", "pairwise")
    with pytest.raises(PrefrunError, match="online.pairs='best' is unknown"):
        resolve_shape("best", "pairwise")


def test_pairs_carry_the_reward_sources_preference_of_winner_over_loser_when_the_row_has_one():
    row = _row([0.5, 1.0, 0.0]) | {"prefs": [[0.5, 0.2, 0.7], [0.8, 0.5, 0.9], [0.3, 0.1, 0.5]]}
    (best_worst,), _ = shape_row(row, "best_worst", with_reference=True)
    assert best_worst["p_chosen"] == 0.9  # P(sample 1 ≻ sample 2)
    all_pairs, _ = shape_row(row, "all", with_reference=True)
    assert sorted(r["p_chosen"] for r in all_pairs) == [0.7, 0.8, 0.9]
    (as_list,), _ = shape_row(row, "list", with_reference=True)
    assert "p_chosen" not in as_list  # a list objective reads its scores
