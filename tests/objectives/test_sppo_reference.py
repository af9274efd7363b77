"""The ``sppo`` objective against uclaml/SPPO's own computation, restated as loops.

The reference pipeline (Wu et al. 2024, arXiv 2405.00675; github.com/uclaml/SPPO): ``scripts/compute_prob.py``
builds P[i][j] = 1/(1 + exp(s_j − s_i)) from PairRM's scores of K = 5 samples (diagonal 0.5), takes chosen =
argmax s and rejected = argmin s, and P̂_w = Σ_j P[w][j]/K, P̂_l = Σ_j P[l][j]/K (self included);
``sppo/trainer.py`` (``loss_type="sppo"``) then computes, with summed log-ratios against the previous iterate,
loss_w = (ρ_w − (1/β)(P̂_w − ½))², loss_l = (ρ_l − (1/β)(P̂_l − ½))², losses = (loss_w + loss_l)/2, mean over
the batch. β = 0.001 as its pipeline.sh.
"""

from __future__ import annotations

import math

import pytest
import torch

from prefrun.objectives import get_objective


def sppo_reference(policy, ref, scores, beta: float) -> float:
    losses = []
    for b in range(len(scores)):
        s = [float(x) for x in scores[b]]
        k = len(s)
        prob = [[1 / (1 + math.exp(s[j] - s[i])) for j in range(k)] for i in range(k)]
        w = max(range(k), key=lambda i: (s[i], -i))  # numpy argmax: the first maximum
        lo = min(range(k), key=lambda i: (s[i], i))  # numpy argmin: the first minimum
        p_win, p_lose = sum(prob[w]) / k, sum(prob[lo]) / k
        logit_w = float(policy[b][w]) - float(ref[b][w])
        logit_l = float(policy[b][lo]) - float(ref[b][lo])
        loss_w = (logit_w - (1 / beta) * (p_win - 0.5)) ** 2
        loss_l = (logit_l - (1 / beta) * (p_lose - 0.5)) ** 2
        losses.append((loss_w + loss_l) / 2)
    return sum(losses) / len(losses)


@pytest.mark.parametrize("beta", [0.001, 0.1])
def test_sppo_equals_the_uclaml_sppo_trainer_formula(beta):
    g = torch.Generator().manual_seed(0)
    b, k = 6, 5
    ref = -20 + 3 * torch.randn(b, k, generator=g, dtype=torch.float64)
    # log-ratios on the scale of the targets η(P̂ − ½) (±500 nats at β = 0.001), so the loss is not dominated by one
    policy = ref + (0.2 / beta) * torch.randn(b, k, generator=g, dtype=torch.float64)
    scores = 2 * torch.randn(b, k, generator=g, dtype=torch.float64)  # PairRM-scale Bradley–Terry logits
    scores[0, 3] = scores[0].max()  # a tied maximum: the first index wins, as numpy's argmax
    out = get_objective("sppo", beta=beta)(policy, ref, scores)
    assert out.loss.item() == pytest.approx(sppo_reference(policy, ref, scores, beta), rel=1e-9)
