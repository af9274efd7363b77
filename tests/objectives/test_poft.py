"""PoFT against its formula written per response, and the data it needs."""

from __future__ import annotations

import math

import pytest
import torch

from prefrun.objectives import get_objective


def test_poft_matches_its_formula_on_every_real_response():
    g = torch.Generator().manual_seed(0)
    policy = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 30
    lengths = torch.randint(1, 12, (3, 4), generator=g).to(torch.float64)
    baseline = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 3
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    beta, gamma = 1.5, 0.2
    out = get_objective("poft", beta=beta, gamma=gamma)(
        policy, None, torch.zeros(3, 4), mask=mask, lengths=lengths, baseline_logps=baseline
    )
    terms = []
    for b in range(3):
        for k in range(4):
            if mask[b, k]:
                z = beta * policy[b, k].item() / lengths[b, k].item() - beta * baseline[b, k].item() + gamma
                terms.append(math.log1p(math.exp(-z)))
    assert out.loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_poft_needs_no_reference_and_declares_its_data_field():
    obj = get_objective("poft")
    assert not obj.needs_reference and obj.spec.inputs == ("baseline_logps",)
