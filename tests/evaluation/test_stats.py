"""Win rates, bootstrap intervals and the length-controlled win rate, against independent computations."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from prefrun.evaluation.stats import (
    bootstrap_interval,
    count_nan,
    length_controlled_win_rate,
    outcomes,
    quartiles,
    win_rate,
)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_win_rate_counts_ties_as_half_and_skips_nan():
    assert outcomes([3, 1, 2], [1, 1, 5]).tolist() == [1.0, 0.5, 0.0]
    assert win_rate([3, 1, 2], [1, 1, 5]) == pytest.approx(0.5)
    assert win_rate([math.nan, 2.0, 0.0], [1.0, 1.0, math.nan]) == 1.0  # only the middle pair has both scores


def test_nan_scores_are_counted_and_warned_about_over_one_percent(caplog):
    with caplog.at_level(logging.WARNING, logger="prefrun"):
        assert count_nan([1.0] * 99 + [math.nan], "few") == 1  # exactly 1%: no warning
        assert not caplog.records
        assert count_nan([1.0] * 98 + [math.nan] * 2, "many") == 2
    assert "many: 2 of 100 scores are NaN" in caplog.text


def test_quartiles_match_numpy():
    values = np.random.default_rng(0).normal(size=37)
    assert quartiles(values) == pytest.approx(tuple(np.quantile(values, [0.25, 0.5, 0.75])))


def test_bootstrap_interval_agrees_with_the_normal_approximation_and_is_seeded():
    y = (np.random.default_rng(1).random(2000) < 0.6).astype(float)
    low, high = bootstrap_interval(y, n_boot=4000, seed=3)
    half = 1.96 * y.std(ddof=1) / math.sqrt(len(y))  # the CLT interval of a mean
    assert low == pytest.approx(y.mean() - half, abs=0.004)
    assert high == pytest.approx(y.mean() + half, abs=0.004)
    assert bootstrap_interval(y, n_boot=500, seed=3) == bootstrap_interval(y, n_boot=500, seed=3)
    assert bootstrap_interval([0.5, 0.5, math.nan], n_boot=50) == (0.5, 0.5)  # NaN left out; no spread


def test_lc_win_rate_equals_sklearn_on_duplicated_weighted_rows():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    delta = rng.integers(-40, 40, size=300).astype(float)
    y = np.clip(1 / (1 + np.exp(-(0.3 - 0.8 * np.tanh(delta / 20)))) + rng.normal(0, 0.1, 300), 0, 1)
    feature = np.tanh(delta / delta.std(ddof=1))
    X = np.concatenate([feature, feature])[:, None]
    labels = np.concatenate([np.ones(300), np.zeros(300)])
    weights = np.concatenate([y, 1 - y])
    fit = LogisticRegression(C=1e10, tol=1e-12, max_iter=10_000).fit(X, labels, sample_weight=weights)
    assert length_controlled_win_rate(y, delta) == pytest.approx(sigmoid(fit.intercept_[0]), abs=1e-6)


def test_lc_win_rate_closed_form_for_two_length_groups():
    # Two groups at Δlen = ∓5 (feature ∓t): a saturated model, σ(θ ± φt) = each group's mean outcome,
    # so θ = (logit m₁ + logit m₂) / 2.
    y = [0.9, 0.7, 0.8, 0.8] + [0.3, 0.5, 0.4, 0.4]
    delta = [-5] * 4 + [5] * 4
    assert length_controlled_win_rate(y, delta) == pytest.approx(sigmoid((logit(0.8) + logit(0.4)) / 2), abs=1e-7)


def test_lc_win_rate_is_the_win_rate_without_length_differences():
    y = [1.0, 0.0, 0.5, 1.0, 1.0]
    assert length_controlled_win_rate(y, [3] * 5) == pytest.approx(0.7, abs=1e-6)


def test_lc_win_rate_removes_a_length_effect_it_can_model():
    delta = np.linspace(-60, 10, 200)
    y = 1 / (1 + np.exp(-(0.4 - 1.5 * np.tanh(delta / delta.std(ddof=1)))))  # longer policy answers win more
    assert y.mean() > sigmoid(0.4) + 0.1
    assert length_controlled_win_rate(y, delta) == pytest.approx(sigmoid(0.4), abs=1e-6)


def test_lc_win_rate_stays_finite_when_the_policy_always_wins():
    assert length_controlled_win_rate([1.0] * 10, list(range(10))) > 0.99
