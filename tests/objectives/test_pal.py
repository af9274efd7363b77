"""pal_a and pal_b: the losses against loops from the formulas, and PAL with one prototype as Bradley–Terry."""

from __future__ import annotations

import math

import pytest
import torch

from prefrun.errors import PrefrunError
from prefrun.models.pal import PALConfig, PALHead
from prefrun.objectives import get_objective


def batch(b: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(b, 2, generator=g, dtype=torch.float64) * 2
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * (b // 2), dtype=torch.float64)
    norms = torch.rand(b, generator=g, dtype=torch.float64) * 8
    return rewards, scores, torch.ones(b, 2, dtype=torch.bool), norms


def loop_loss(rewards, scores, norms, *, loss, margin, bound, weight) -> float:
    total = 0.0
    for b in range(len(rewards)):
        w, lose = (0, 1) if scores[b, 0] > scores[b, 1] else (1, 0)
        delta = float(rewards[b, w] - rewards[b, lose])
        total += max(0.0, margin - delta) if loss == "hinge" else -math.log(1 / (1 + math.exp(-delta)))
    penalty = sum(max(0.0, float(n) - bound) for n in norms)  # summed over the batch, as the reference code
    return total / len(rewards) + weight * penalty


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("pal_a", {}),  # hinge, margin 1, bound 23 (never reached by these norms: the hinge alone)
        ("pal_a", {"hinge_margin": 0.5, "bound": 3.0, "bound_weight": 0.1}),
        ("pal_b", {}),  # logistic, bound 4
        ("pal_b", {"loss": "hinge", "bound_weight": 0.0}),
    ],
)
def test_the_loss_equals_a_loop_over_the_formula(name, hparams):
    rewards, scores, mask, norms = batch()
    objective = get_objective(name, **hparams)
    hp = objective.hparams
    out = objective.reward_loss(rewards, scores, mask=mask, ideal_norms=norms)
    expected = loop_loss(
        rewards, scores, norms, loss=hp["loss"], margin=hp["hinge_margin"], bound=hp["bound"], weight=hp["bound_weight"]
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)
    right = [rewards[b, 0] > rewards[b, 1] if b % 2 == 0 else rewards[b, 1] > rewards[b, 0] for b in range(6)]
    assert out.metrics["rewards/accuracies"] == pytest.approx(sum(map(float, right)) / 6)


@pytest.mark.parametrize(("name", "similarity"), [("pal_a", "distance"), ("pal_b", "cosine"), ("pal_b", "distance")])
def test_with_one_prototype_pal_is_a_bradley_terry_model_on_the_same_features(name, similarity):
    """K_p = 1: every user's mixture is [1], so r_u is one reward for all users, the table gets no gradient,
    and pal_b's loss (logistic, no bound) is objective=bt's on that reward."""
    torch.manual_seed(0)
    objective = get_objective(name, prototypes=1, similarity=similarity, loss="logistic", bound_weight=0.0)
    head = PALHead(PALConfig.from_hparams(objective.hparams, hidden_size=12), ["a", "b", "c"])
    prompt, items = torch.randn(5, 12), torch.randn(5, 2, 12)
    scores = torch.tensor([[1.0, 0.0]] * 5)
    out = {u: head(prompt, items, head.user_indices([u] * 5)) for u in ("a", "b", "c", None)}
    for u in ("b", "c", None):  # None: the mean mixture
        assert torch.equal(out[u]["rewards"], out["a"]["rewards"])
    rewards = out["a"]["rewards"]
    loss = objective.reward_loss(rewards, scores, ideal_norms=out["a"]["ideal_norms"]).loss
    assert loss.item() == pytest.approx(get_objective("bt").reward_loss(rewards, scores).loss.item(), rel=1e-6)
    loss.backward()
    assert head.W.grad is not None and torch.count_nonzero(head.W.grad) == 0
    assert head.f.mlp[0].weight.grad.abs().sum() > 0


def test_two_prototypes_give_users_their_own_rewards():
    torch.manual_seed(0)
    objective = get_objective("pal_b")
    head = PALHead(PALConfig.from_hparams(objective.hparams, hidden_size=12), ["a", "b"])
    with torch.no_grad():
        head.W.copy_(torch.tensor([[5.0, -5.0], [-5.0, 5.0]]))
    prompt, items = torch.randn(4, 12), torch.randn(4, 2, 12)
    r_a = head(prompt, items, head.user_indices(["a"] * 4))["rewards"]
    r_b = head(prompt, items, head.user_indices(["b"] * 4))["rewards"]
    assert not torch.allclose(r_a, r_b)


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("pal_a", {"user_point": "prompt"}, "objective.user_point='prompt': pal_a places the user by 'ideal'"),
        ("pal_b", {"prototypes": 0}, "objective.prototypes=0 must be an integer ≥ 1; e.g. objective.prototypes=2"),
        ("pal_b", {"similarity": "dot"}, "objective.similarity='dot' must be one of distance, cosine"),
        ("pal_b", {"lr": 0.0}, "objective.lr=0.0 is out of range for pal_b: it must be > 0; try 1e-3"),
    ],
)
def test_bad_hyperparameters_are_one_line_errors(name, hparams, message):
    with pytest.raises(PrefrunError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        get_objective(name, **hparams)
