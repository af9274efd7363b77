"""InfAlign's calculator against closed forms, independent quadrature (scipy) and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefrun.errors import PrefrunError
from prefrun.evaluation import infalign
from prefrun.evaluation.stats import win_rate

integrate = pytest.importorskip("scipy.integrate")
optimize = pytest.importorskip("scipy.optimize")


# --- best-of-N of the base policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "kl"), [(2, 0.193), (4, 0.636), (8, 1.204), (16, 1.835)])
def test_bon_kl_closed_form_matches_quadrature_and_the_notes(n, kl):
    density = lambda u: n * u ** (n - 1)  # noqa: E731
    numeric, _ = integrate.quad(lambda u: density(u) * math.log(density(u)), 0, 1)
    assert infalign.bon_kl(n) == pytest.approx(numeric, abs=1e-8)
    assert infalign.bon_kl(n) == pytest.approx(kl, abs=5e-4)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_bon_win_rate_is_n_over_n_plus_1_by_monte_carlo(n):
    rng = np.random.default_rng(n)
    best = rng.random((200_000, n)).max(axis=1)
    assert np.mean(best > rng.random(200_000)) == pytest.approx(infalign.bon_win_rate(n), abs=0.004)


def test_bon_plugin_kl_of_calibrated_best_of_n_samples():
    """Best-of-4 of a continuous reward, calibrated against 500 reference samples per prompt (SE ≈ 0.012)."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4000, 500))
    best = rng.normal(size=(4000, 4)).max(axis=1)
    c = infalign.calibrate(best, reference)
    assert infalign.bon_plugin_kl(c, 4) == pytest.approx(infalign.bon_kl(4), abs=0.05)


# --- the tilted policies -----------------------------------------------------------------------------------------


def _identity_closed_form(kl: float) -> tuple[float, float]:
    """g = λ e^{λu} / (e^λ − 1): (λ at KL, E_g[u]) by brentq on the closed-form KL."""
    mean = lambda lam: 1 / (1 - math.exp(-lam)) - 1 / lam  # noqa: E731
    kl_of = lambda lam: math.log(lam / math.expm1(lam)) + lam * mean(lam)  # noqa: E731
    lam = optimize.brentq(lambda x: kl_of(x) - kl, 1e-6, 100)
    return lam, mean(lam)


def test_identity_tilt_at_n1_matches_its_closed_form_and_the_notes():
    _, expected = _identity_closed_form(0.5)
    assert infalign.win_rate("identity", 0.5, 1) == pytest.approx(expected, abs=1e-6)
    assert infalign.win_rate("identity", 0.5, 1) == pytest.approx(0.774, abs=0.002)


def test_log_tilt_is_bon_distillation_with_a_win_rate_free_of_n():
    """g = (λ+1) u^λ: KL = log(λ+1) − λ/(λ+1), and BoN_N(g) beats BoN_N(U) with (λ+1)/(λ+2) for every N."""
    lam = optimize.brentq(lambda x: math.log(x + 1) - x / (x + 1) - 0.5, 1e-6, 100)
    for n in (1, 2, 4, 8):
        assert infalign.win_rate("log", 0.5, n) == pytest.approx((lam + 1) / (lam + 2), abs=2e-5)
    assert (lam + 1) / (lam + 2) == pytest.approx(0.768, abs=0.001)


def _quadrature_win_rate(phi, kl: float, n: int, mode: str) -> float:
    """Independent: λ by brentq on quad's KL, the CDF by quad, the win rate by quad."""

    def parts(lam):
        top = lam * phi(1.0) if lam * phi(1.0) > lam * phi(0.0) else lam * phi(0.0)
        z, _ = integrate.quad(lambda u: math.exp(lam * phi(u) - top), 0, 1)
        log_z = top + math.log(z)
        kl_value, _ = integrate.quad(lambda u: math.exp(lam * phi(u) - log_z) * (lam * phi(u) - log_z), 0, 1)
        return log_z, kl_value

    lam = optimize.brentq(lambda x: parts(x)[1] - kl, 1e-9, 50.0)
    log_z = parts(lam)[0]
    g = lambda u: math.exp(lam * phi(u) - log_z)  # noqa: E731
    cdf = lambda u: integrate.quad(g, 0, u)[0]  # noqa: E731
    if mode == "best":
        value, _ = integrate.quad(lambda u: n * g(u) * cdf(u) ** (n - 1) * u**n, 0, 1, limit=200)
    else:
        value, _ = integrate.quad(lambda u: n * g(u) * (1 - cdf(u)) ** (n - 1) * (1 - (1 - u) ** n), 0, 1, limit=200)
    return value


@pytest.mark.parametrize(
    ("transform", "t", "n", "kl", "mode", "notes"),
    [
        ("exp", 10.0, 4, 0.5, "best", 0.871),
        ("exp", 3.0, 2, 0.5, "best", 0.813),
        ("identity", 1.0, 4, 1.0, "best", 0.877),
        ("neg_exp", 5.0, 4, 0.5, "worst", 0.944),
        ("identity", 1.0, 4, 0.5, "worst", 0.886),
    ],
)
def test_win_rate_matches_quadrature_and_the_notes(transform, t, n, kl, mode, notes):
    phi = {
        "exp": lambda u: math.exp(t * u) / math.exp(t),  # rescaled only to keep quad finite
        "neg_exp": lambda u: -math.exp(-t * u),
        "identity": lambda u: u,
    }[transform]
    ours = infalign.win_rate(transform, kl, n, t=t, mode=mode)
    assert ours == pytest.approx(_quadrature_win_rate(phi, kl, n, mode), abs=2e-4)
    assert ours == pytest.approx(notes, abs=0.003)


def test_win_rate_by_monte_carlo_from_the_tilted_density():
    """Sample u ~ g by inverting the grid CDF; best-of-4 of g against best-of-4 of uniforms."""
    g = infalign.tilt("exp", 0.5, t=5.0)
    assert np.sum(g) * infalign.H == pytest.approx(1.0, abs=1e-9)
    assert np.sum(g * np.log(g)) * infalign.H == pytest.approx(0.5, abs=1e-6)
    rng = np.random.default_rng(0)
    cdf = np.cumsum(g) / np.sum(g)
    samples = infalign.U[np.searchsorted(cdf, rng.random((200_000, 4)))]
    wins = samples.max(axis=1) > rng.random((200_000, 4)).max(axis=1)
    assert wins.mean() == pytest.approx(infalign.win_rate("exp", 0.5, 4, t=5.0), abs=0.004)


def test_the_paper_claims_on_the_curves():
    """Identity is best for the standard win rate; exp(t·u) wins for best-of-N, more so as N grows."""
    kls = [0.25, 0.5, 1.0]
    ident_1, exp_1 = infalign.curve("identity", kls, 1), infalign.curve("exp", kls, 1, t=5.0)
    assert all(i > e for i, e in zip(ident_1, exp_1))
    gaps = [infalign.win_rate("exp", 0.5, n, t=10.0) - infalign.win_rate("identity", 0.5, n) for n in (2, 4, 8)]
    assert gaps[1] >= 0.05 and gaps[0] < gaps[1] < gaps[2]
    assert infalign.win_rate("exp", 0.0, 4, t=10.0) == pytest.approx(0.5, abs=1e-6)  # no KL: π_ref itself


# --- calibration -------------------------------------------------------------------------------------------------


def test_calibrate_mid_rank_by_hand():
    reference = [[1.0, 2.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]]
    c = infalign.calibrate([[2.0, 0.0, 3.5], [5.0, 6.0, 4.0]], reference)
    np.testing.assert_allclose(c, [[0.5, 0.0, 1.0], [0.5, 1.0, 0.0]])  # (1 + ½·2)/4, ½·4/4 ...
    np.testing.assert_allclose(infalign.calibrate([2.0, 5.0], reference), [0.5, 0.5])


def test_mean_calibrated_reward_is_the_win_rate_against_the_reference():
    rng = np.random.default_rng(1)
    policy = rng.integers(0, 6, (50, 8)).astype(float)  # a discrete reward: many ties
    reference = rng.integers(0, 5, (50, 64)).astype(float)
    c = infalign.calibrate(policy, reference)
    pairs_p = np.repeat(policy[:, :, None], 64, axis=2).ravel()
    pairs_r = np.repeat(reference[:, None, :], 8, axis=1).ravel()
    assert c.mean() == pytest.approx(win_rate(pairs_p, pairs_r), abs=1e-12)


def test_calibration_is_uniform_under_the_reference_and_ignores_monotone_rescaling():
    rng = np.random.default_rng(2)
    reference, fresh = rng.normal(size=(100, 256)), rng.normal(size=(100, 16))
    c = infalign.calibrate(fresh, reference)
    assert np.quantile(c, [0.1, 0.5, 0.9]) == pytest.approx([0.1, 0.5, 0.9], abs=0.02)
    np.testing.assert_array_equal(infalign.calibrate(np.exp(3 * fresh), np.exp(3 * reference)), c)


def test_calibrate_nan():
    c = infalign.calibrate([[math.nan, 1.0]], [[0.0, math.nan, 2.0]])
    assert math.isnan(c[0, 0]) and c[0, 1] == 0.5  # the NaN reference sample is left out: m = 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: infalign.calibrate([1.0, 2.0], [[1.0]]), "rewards"),
        (lambda: infalign.calibrate([1.0], [[math.nan]]), "no finite reference"),
        (lambda: infalign.win_rate("tanh", 0.5), "transform='tanh'"),
        (lambda: infalign.win_rate("identity", 0.5, 0), "n=0"),
        (lambda: infalign.win_rate("identity", 0.5, mode="median"), "mode='median'"),
        (lambda: infalign.win_rate("identity", -1.0), "kl=-1.0"),
        (lambda: infalign.win_rate("exp", 0.5, t=0.0), "t=0.0"),
    ],
)
def test_errors(call, message):
    with pytest.raises(PrefrunError, match=message):
        call()


def test_tilted_pool_approaches_the_tilted_density():
    """Resampling M uniform samples with weights ∝ exp(λ u) is g_λ as M grows: same KL, same mean C."""
    rng = np.random.default_rng(3)
    c = rng.random((20, 20_000))
    lam, mean = _identity_closed_form(0.5)
    w = infalign.pool_weights(c, "identity", beta=1.0 / lam)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert infalign.pool_kl(w) == pytest.approx(0.5, abs=0.01)
    assert float((w * c).sum(axis=1).mean()) == pytest.approx(mean, abs=0.005)
    flat = infalign.pool_weights(c, "exp", beta=1e9, t=10.0)
    assert infalign.pool_kl(flat) == pytest.approx(0.0, abs=1e-9)  # β → ∞: π_ref itself
    with pytest.raises(PrefrunError, match="beta=0"):
        infalign.pool_weights(c, beta=0)
