"""The foundation DPO family checked against the formulas written as plain loops over pairs."""

from __future__ import annotations

import math

import pytest
import torch

from prefrun.objectives import available_objectives, get_objective


def _batch(b: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    policy = torch.randn(b, 2, generator=g, dtype=torch.float64) * 5 - 20
    ref = torch.randn(b, 2, generator=g, dtype=torch.float64) * 5 - 20
    # chosen is sometimes in column 0, sometimes in column 1: objectives must read it from the scores
    scores = torch.tensor([[1.0, 0.0] if i % 2 else [0.0, 1.0] for i in range(b)], dtype=torch.float64)
    lengths = torch.randint(1, 20, (b, 2), generator=g).to(torch.float64)
    return policy, ref, scores, lengths


def _pairs(policy, ref, scores, lengths):
    for i in range(policy.shape[0]):
        w, lo = (0, 1) if scores[i, 0] > scores[i, 1] else (1, 0)
        yield (
            policy[i, w].item(),
            policy[i, lo].item(),
            ref[i, w].item(),
            ref[i, lo].item(),
            lengths[i, w].item(),
            lengths[i, lo].item(),
        )


def log_sigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z)) if z > 0 else z - math.log1p(math.exp(z))


def reference_loss(name: str, beta: float, eps: float, batch) -> float:
    total = []
    for pw, pl, rw, rl, nw, nl in _pairs(*batch):
        h = (pw - rw) - (pl - rl)
        if name == "dpo":
            total.append(-log_sigmoid(beta * h))
        elif name == "ipo":
            total.append(((pw - rw) / nw - (pl - rl) / nl - 1 / (2 * beta)) ** 2)
        elif name == "hinge":
            total.append(max(0.0, 1 - beta * h))
        elif name == "robust":
            total.append(((1 - eps) * -log_sigmoid(beta * h) - eps * -log_sigmoid(-beta * h)) / (1 - 2 * eps))
    return sum(total) / len(total)


@pytest.mark.parametrize("name", ["dpo", "ipo", "hinge", "robust"])
@pytest.mark.parametrize("beta", [0.05, 0.5, 2.0])
def test_pairwise_losses_match_their_formulas(name, beta):
    batch = _batch()
    kwargs = {"beta": beta, **({"label_smoothing": 0.2} if name == "robust" else {})}
    out = get_objective(name, **kwargs)(batch[0], batch[1], batch[2], lengths=batch[3])
    assert out.loss.item() == pytest.approx(reference_loss(name, beta, 0.2, batch), rel=1e-9, abs=1e-9)


def test_robust_with_zero_smoothing_is_dpo():
    batch = _batch()
    a = get_objective("robust", beta=0.1, label_smoothing=0.0)(batch[0], batch[1], batch[2]).loss
    b = get_objective("dpo", beta=0.1)(batch[0], batch[1], batch[2]).loss
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_sft_is_token_mean_nll_of_the_best_response():
    policy, ref, scores, lengths = _batch()
    out = get_objective("sft")(policy, None, scores, lengths=lengths)
    nll = sum(-pw for pw, *_ in _pairs(policy, ref, scores, lengths))
    tokens = sum(nw for *_, nw, _ in _pairs(policy, ref, scores, lengths))
    assert out.loss.item() == pytest.approx(nll / tokens, rel=1e-9)


def test_core_metrics_are_named_alike_for_every_objective():
    policy, ref, scores, lengths = _batch()
    out = get_objective("dpo", beta=0.1)(policy, ref, scores, lengths=lengths)
    assert {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "lengths/chosen",
        "lengths/rejected",
    } <= set(out.metrics)
    margin = out.metrics["rewards/chosen"] - out.metrics["rewards/rejected"]
    assert out.metrics["rewards/margins"] == pytest.approx(margin)


def test_unknown_objective_is_a_value_error_listing_the_choices():
    with pytest.raises(ValueError, match="unknown objective 'nope'; available: .*dpo"):
        get_objective("nope")


@pytest.mark.parametrize("beta", [0, -0.1])
def test_beta_must_be_positive(beta):
    with pytest.raises(ValueError, match="beta"):
        get_objective("dpo", beta=beta)


def test_unknown_hyperparameter_names_the_accepted_ones():
    with pytest.raises(ValueError, match="no hyperparameter 'gamma'; it takes: beta"):
        get_objective("dpo", gamma=1.0)


def test_robust_rejects_smoothing_of_one_half():
    with pytest.raises(ValueError, match="label_smoothing"):
        get_objective("robust", label_smoothing=0.5)


def test_reference_objectives_refuse_missing_reference():
    batch = _batch()
    with pytest.raises(ValueError, match="needs reference"):
        get_objective("dpo")(batch[0], None, batch[2])


def test_foundation_objectives_are_registered():
    assert {"dpo", "ipo", "hinge", "robust", "sft"} <= set(available_objectives())
