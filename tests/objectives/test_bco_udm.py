"""BCO with UDM weights: undesirable losses × w, the mean over all examples (TRL's ``losses.nanmean()``)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from prefrun.objectives import get_objective

TOL = dict(rel=1e-9, abs=1e-12)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def batch(seed: int, b: int = 12):
    rng = random.Random(seed)
    pol = [rng.uniform(-40, -5) for _ in range(b)]
    ref = [rng.uniform(-40, -5) for _ in range(b)]
    labels = [i % 3 != 0 for i in range(b)]
    weights = [1.0 if good else rng.uniform(0.5, 10.0) for good in labels]
    tensors = dict(
        policy_logps=torch.tensor(pol, dtype=torch.float64)[:, None],
        ref_logps=torch.tensor(ref, dtype=torch.float64)[:, None],
        scores=torch.tensor([float(g) for g in labels], dtype=torch.float64)[:, None],
        labels=torch.tensor(labels)[:, None],
    )
    return pol, ref, labels, weights, tensors


def call(t: dict, delta: float, beta: float, udm_weights: torch.Tensor | None):
    obj = get_objective("bco", beta=beta)
    extra = {} if udm_weights is None else {"udm_weights": udm_weights}
    return obj(
        t["policy_logps"],
        t["ref_logps"],
        t["scores"],
        labels=t["labels"],
        reward_shift=torch.tensor(delta, dtype=torch.float64),
        **extra,
    )


def test_bco_weights_undesirable_losses_and_averages_over_all_examples():
    pol, ref, labels, weights, t = batch(31)
    beta, delta = 0.1, -0.7
    want = []
    for p, r, good, w in zip(pol, ref, labels, weights):
        reward = beta * (p - r)
        want.append(-logsig(reward - delta) if good else w * -logsig(-(reward - delta)))
    want_loss = sum(want) / len(want)  # mean over all examples, not Σ w·l / Σ w
    out = call(t, delta, beta, torch.tensor(weights, dtype=torch.float64)[:, None])
    assert out.loss.item() == pytest.approx(want_loss, **TOL)
    bad = [w for w, good in zip(weights, labels) if not good]
    assert out.metrics["bco/udm_weight"] == pytest.approx(sum(bad) / len(bad), **TOL)


def test_desirable_entries_of_the_weights_are_not_read():
    _, _, labels, weights, t = batch(32)
    w = torch.tensor(weights, dtype=torch.float64)[:, None]
    scrambled = torch.where(t["labels"], torch.full_like(w, 7.0), w)
    assert call(t, 0.3, 0.1, scrambled).loss.item() == pytest.approx(call(t, 0.3, 0.1, w).loss.item(), **TOL)


def test_weights_of_one_equal_unweighted_bco():
    _, _, _, _, t = batch(33)
    plain = call(t, 0.4, 0.1, None)
    ones = call(t, 0.4, 0.1, torch.ones(12, 1, dtype=torch.float64))
    assert ones.loss.item() == pytest.approx(plain.loss.item(), **TOL)
    assert "bco/udm_weight" not in plain.metrics  # UDM off: metric names unchanged
    assert ones.metrics["bco/udm_weight"] == 1.0


def test_weights_get_no_gradient_and_a_batch_without_undesirable_examples_logs_nan():
    _, _, _, weights, t = batch(34)
    base = torch.tensor(weights, dtype=torch.float64, requires_grad=True)
    pol = t["policy_logps"].clone().requires_grad_(True)
    call({**t, "policy_logps": pol}, 0.0, 0.1, base[:, None]).loss.backward()
    assert pol.grad is not None and base.grad is None  # the weights are data, detached
    good = {**t, "labels": torch.ones(12, 1, dtype=torch.bool)}
    assert math.isnan(call(good, 0.0, 0.1, torch.ones(12, 1)).metrics["bco/udm_weight"])
