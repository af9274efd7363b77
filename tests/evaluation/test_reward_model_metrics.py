"""Held-out figures of a reward model: pair accuracy, calibration error, Spearman's ρ per list."""

from __future__ import annotations

import math

import pytest
import torch

from prefrun.evaluation.reward_model import (
    accuracy,
    expected_calibration_error,
    held_out_pairs,
    mean_spearman,
    reward_model_metrics,
    spearman,
)


def test_pairs_follow_the_training_mode_and_drop_ties():
    assert held_out_pairs([0.2, 0.9, 0.5], "best_worst") == [(1, 0)]
    assert sorted(held_out_pairs([0.2, 0.9, 0.2], "all")) == [(1, 0), (1, 2)]


def test_accuracy_counts_ties_half():
    assert accuracy(torch.tensor([1.0, -2.0, 0.0, 3.0], dtype=torch.float64)) == pytest.approx(2.5 / 4)


def test_ece_matches_a_loop_over_both_orders_of_each_pair():
    g = torch.Generator().manual_seed(0)
    margins = torch.randn(200, generator=g, dtype=torch.float64) * 2 + 1
    items = []
    for m in margins.tolist():
        p = 1 / (1 + math.exp(-m))
        items += [(p, 1.0), (1 - p, 0.0)]
    want = 0.0
    for b in range(10):
        in_bin = [(p, y) for p, y in items if b / 10 <= p < (b + 1) / 10 or (b == 9 and p == 1.0)]
        if in_bin:
            conf = sum(p for p, _ in in_bin) / len(in_bin)
            acc = sum(y for _, y in in_bin) / len(in_bin)
            want += len(in_bin) / len(items) * abs(acc - conf)
    assert expected_calibration_error(margins, 10) == pytest.approx(want, abs=1e-12)
    assert want > 0.01  # a miscalibrated set: the check can fail


def test_a_calibrated_model_has_a_small_ece():
    g = torch.Generator().manual_seed(1)
    # A margin m makes the chosen one win with probability σ(m): orient pairs by a coin with that bias.
    m = torch.randn(20000, generator=g, dtype=torch.float64)
    wins = torch.rand(20000, generator=g, dtype=torch.float64) < torch.sigmoid(m)
    assert expected_calibration_error(torch.where(wins, m, -m), 10) < 0.02


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    x, y = [0.1, 0.4, 0.4, 0.9, 0.3, 0.2], [1.0, 3.0, 2.0, 2.0, 0.5, 0.5]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman([1.0, 2.0], [0.5, 0.5]))


def test_mean_spearman_skips_lists_without_an_order():
    mean, used, skipped = mean_spearman(
        [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], [[1, 2, 3], [1, 2, 3], [0, 0, 0]]
    )
    assert (mean, used, skipped) == (pytest.approx(0.0), 2, 1)


def test_metrics_of_perfect_rewards_on_lists():
    records = [{"scores": [0.0, 0.5, 1.0, 0.25]}, {"scores": [1.0, 0.0, 0.5, 0.75]}]
    rewards = [[10 * s for s in r["scores"]] for r in records]
    m = reward_model_metrics(rewards, records, pairs="best_worst")
    assert (m["pairs"], m["accuracy"], m["all_pairs"], m["all_pairs_accuracy"]) == (2, 1.0, 12, 1.0)
    assert m["spearman"] == pytest.approx(1.0) and m["spearman_vs"] == "labels" and m["k"] == 4
    assert m["ece"] == pytest.approx(1 - torch.sigmoid(torch.tensor(10.0, dtype=torch.float64)).item())
