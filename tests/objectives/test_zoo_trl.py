"""The TRL-native zoo objectives against TRL 1.16's own loss code, called without a model.

``DPOTrainer._compute_loss`` and ``KTOTrainer._compute_loss`` run on a stand-in ``self`` (precomputed
reference log-probs, a one-GPU accelerator that gathers nothing) and a stand-in model whose per-token
log-probs sum to the chosen values; ``CPOTrainer.cpo_loss`` and ``ORPOTrainer.odds_ratio_loss`` are called
directly. What TRL computes from logits (the NLL terms of CPO and ORPO) is checked in test_zoo.py instead.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from prefrun.objectives import get_objective

# trl is pinned (constraints.txt): a moved module must fail, never skip
trl_dpo = importlib.import_module("trl.trainer.dpo_trainer")
trl_kto = importlib.import_module("trl.trainer.kto_trainer")
trl_cpo = importlib.import_module("trl.experimental.cpo.cpo_trainer")
trl_orpo = importlib.import_module("trl.experimental.orpo.orpo_trainer")

CPU = torch.device("cpu")
ACCELERATOR = SimpleNamespace(device=CPU, gather_for_metrics=lambda x: x, gather=lambda x: x)


def _metrics():
    return defaultdict(lambda: defaultdict(list))


def _fake_model(per_token_logps: torch.Tensor):
    zeros = torch.zeros_like(per_token_logps)
    outputs = SimpleNamespace(
        log_probs=per_token_logps,
        entropy=zeros,
        mean_logits=zeros,
        is_top1=torch.zeros_like(per_token_logps, dtype=torch.bool),
    )
    return lambda **kwargs: outputs


def _sequences(logps: torch.Tensor, lengths: torch.Tensor):
    """input ids, completion mask [N, T] (one prompt token, then |y| completion tokens, then padding) and
    per-token log-probs [N, T − 1] that sum to ``logps`` over each completion."""
    n, t = len(logps), int(lengths.max()) + 2
    completion_mask = torch.zeros(n, t, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        completion_mask[i, 1 : 1 + length] = 1
    per_token = completion_mask[:, 1:].to(logps.dtype) * (logps / lengths.to(logps.dtype))[:, None]
    return torch.zeros(n, t, dtype=torch.long), completion_mask, per_token


def trl_dpo_loss(
    loss_type: str,
    pol_w,
    pol_l,
    ref_w,
    ref_l,
    len_w,
    len_l,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
) -> torch.Tensor:
    input_ids, completion_mask, per_token = _sequences(torch.cat([pol_w, pol_l]), torch.cat([len_w, len_l]))
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=ACCELERATOR,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        args=SimpleNamespace(discopop_tau=discopop_tau),
        use_weighting=False,
        _metrics=_metrics(),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_w,
        "ref_rejected_logps": ref_l,
    }
    return trl_dpo.DPOTrainer._compute_loss(fake, _fake_model(per_token), inputs, return_outputs=False)


def random_pairs(seed: int, b: int = 8):
    """Our [B, 2] tensors, the chosen entry at a random position, and TRL's chosen/rejected [B] tensors."""
    g = torch.Generator().manual_seed(seed)
    pol = -torch.rand(b, 2, generator=g, dtype=torch.float64) * 40 - 2
    ref = -torch.rand(b, 2, generator=g, dtype=torch.float64) * 40 - 2
    lengths = torch.randint(2, 30, (b, 2), generator=g)
    col = torch.randint(0, 2, (b,), generator=g)
    scores = torch.nn.functional.one_hot(col, 2).to(torch.float64)  # the chosen entry scores 1
    rows = torch.arange(b)
    trl = dict(
        pol_w=pol[rows, col],
        pol_l=pol[rows, 1 - col],
        ref_w=ref[rows, col],
        ref_l=ref[rows, 1 - col],
        len_w=lengths[rows, col],
        len_l=lengths[rows, 1 - col],
    )
    ours = dict(policy_logps=pol, ref_logps=ref, scores=scores, lengths=lengths)
    return ours, trl


def ours_loss(name: str, ours: dict, **hp) -> float:
    obj = get_objective(name, **hp)
    ref = ours["ref_logps"] if obj.needs_reference else None
    return obj(ours["policy_logps"], ref, ours["scores"], lengths=ours["lengths"]).loss.item()


TRL_DPO_CASES = [  # (our objective, TRL loss_type, hyperparameters)
    ("cdpo", "sigmoid", {"beta": 0.1, "label_smoothing": 0.0}),
    ("nca_pair", "nca_pair", {"beta": 0.1}),
    ("exo_pair", "exo_pair", {"beta": 0.1, "label_smoothing": 1e-3}),
    ("exo_pair", "exo_pair", {"beta": 0.3, "label_smoothing": 0.25}),
    ("apo_zero", "apo_zero", {"beta": 0.1}),
    ("apo_down", "apo_down", {"beta": 0.2}),
    ("discopop", "discopop", {"beta": 0.05, "tau": 0.05}),
    ("discopop", "discopop", {"beta": 0.1, "tau": 0.7}),
    ("aot", "aot", {"beta": 0.1, "label_smoothing": 0.0}),
    ("aot", "aot", {"beta": 0.2, "label_smoothing": 0.15}),
    ("ln_dpo", "sigmoid_norm", {"beta": 2.0}),
    ("sppo_hard", "sppo_hard", {"beta": 0.05}),
]


@pytest.mark.parametrize(("seed", "name", "loss_type", "hp"), [(i, *c) for i, c in enumerate(TRL_DPO_CASES)])
def test_matches_trl_dpo_trainer(seed, name, loss_type, hp):
    ours, trl = random_pairs(seed)
    tau = hp.get("tau", 0.05)
    trl_hp = {"beta": hp["beta"], "label_smoothing": hp.get("label_smoothing", 0.0), "discopop_tau": tau}
    expected = trl_dpo_loss(loss_type, **trl, **trl_hp).item()
    assert ours_loss(name, ours, **hp) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def _cpo_self(loss_type: str, beta: float, label_smoothing: float = 0.0, simpo_gamma: float = 0.5):
    return SimpleNamespace(
        alpha=0.0,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        simpo_gamma=simpo_gamma,
        accelerator=ACCELERATOR,
    )


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_cdpo_matches_trl_label_smoothed_sigmoid(eps):
    # TRL 1.16's DPO sigmoid ignores label_smoothing; its CPO "sigmoid" branch keeps the cDPO form, so feed
    # it the log-ratios in place of log-probs.
    ours, trl = random_pairs(31)
    beta = 0.2
    losses, _, _ = trl_cpo.CPOTrainer.cpo_loss(
        _cpo_self("sigmoid", beta, eps), trl["pol_w"] - trl["ref_w"], trl["pol_l"] - trl["ref_l"]
    )
    got = ours_loss("cdpo", ours, beta=beta, label_smoothing=eps)
    assert got == pytest.approx(losses.mean().item(), rel=1e-6)


def test_cpo_preference_term_matches_trl():
    ours, trl = random_pairs(32)
    losses, _, _ = trl_cpo.CPOTrainer.cpo_loss(_cpo_self("sigmoid", 0.1), trl["pol_w"], trl["pol_l"])
    assert ours_loss("cpo", ours, beta=0.1, cpo_alpha=0.0) == pytest.approx(losses.mean().item(), rel=1e-6)


@pytest.mark.parametrize(("beta", "ratio"), [(2.0, 0.8), (10.0, 0.3)])
def test_simpo_matches_trl_with_gamma_not_ratio(beta, ratio):
    ours, trl = random_pairs(33)
    avg_w, avg_l = trl["pol_w"] / trl["len_w"], trl["pol_l"] / trl["len_l"]
    fake = _cpo_self("simpo", beta, simpo_gamma=ratio * beta)
    losses, _, _ = trl_cpo.CPOTrainer.cpo_loss(fake, avg_w, avg_l)
    got = ours_loss("simpo", ours, beta=beta, gamma_beta_ratio=ratio)
    assert got == pytest.approx(losses.mean().item(), rel=1e-6)


@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_orpo_odds_ratio_term_matches_trl(lam):
    ours, trl = random_pairs(34)
    ours["policy_logps"] = ours["policy_logps"] / 10  # ℓ̄ up to ≈ −0.07: p close to 1, where log1mexp matters
    trl["pol_w"], trl["pol_l"] = trl["pol_w"] / 10, trl["pol_l"] / 10
    avg_w, avg_l = trl["pol_w"] / trl["len_w"], trl["pol_l"] / trl["len_l"]
    fake = SimpleNamespace(beta=lam, accelerator=ACCELERATOR)
    losses, *_ = trl_orpo.ORPOTrainer.odds_ratio_loss(fake, avg_w, avg_l)
    nll = -trl["pol_w"].sum() / trl["len_w"].sum()
    expected = (nll - losses.mean()).item()  # TRL: policy_nll_loss − losses.mean()
    assert ours_loss("orpo", ours, beta=lam) == pytest.approx(expected, rel=1e-6)  # TRL works in fp32


def trl_kto_loss(pol, ref, labels, kl_pol, kl_ref, *, beta, desirable_weight, undesirable_weight):
    lengths = torch.full((len(pol),), 3)
    input_ids, completion_mask, per_token = _sequences(pol, lengths)
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=ACCELERATOR,
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        calculate_KL=True,
        loss_type="kto",
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        _compute_kl_logps=lambda model, batch: kl_pol,
        _metrics=_metrics(),
        _total_train_tokens=0,
        _tp_size=1,
    )
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "completion_mask": completion_mask,
        "label": labels,
        "ref_logps": ref,
        "ref_KL_logps": kl_ref,
    }
    return trl_kto.KTOTrainer._compute_loss(fake, _fake_model(per_token), batch, return_outputs=False)


@pytest.mark.parametrize(("kl_offset", "wd", "wu"), [(5.0, 1.0, 1.0), (-30.0, 1.0, 1.33), (0.0, 0.8, 1.2)])
def test_kto_matches_trl_kto_trainer(kl_offset, wd, wu):
    g = torch.Generator().manual_seed(35)
    b = 10
    pol = -torch.rand(b, generator=g, dtype=torch.float64) * 40 - 2
    ref = -torch.rand(b, generator=g, dtype=torch.float64) * 40 - 2
    kl_pol = -torch.rand(b, generator=g, dtype=torch.float64) * 40 - 2
    kl_ref = kl_pol - kl_offset - torch.randn(b, generator=g, dtype=torch.float64)
    labels = torch.rand(b, generator=g) < 0.6
    labels[:2] = torch.tensor([True, False])
    expected = trl_kto_loss(
        pol, ref, labels, kl_pol, kl_ref, beta=0.1, desirable_weight=wd, undesirable_weight=wu
    ).item()
    obj = get_objective("kto", beta=0.1, desirable_weight=wd, undesirable_weight=wu)
    out = obj(
        pol[:, None],
        ref[:, None],
        labels[:, None].to(torch.float64),
        lengths=torch.full((b, 1), 3),
        labels=labels[:, None],
        kl_logratios=kl_pol - kl_ref,
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
