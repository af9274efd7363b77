"""The zoo objectives against their formulas written as plain loops (math module, float64, one example at a
time), plus hyperparameter validation, reference independence and the YAML ↔ registry match.

Formulas: each objective's docstring, which cites its paper (arXiv id, equation where known).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from prefrun.errors import PrefrunError
from prefrun.objectives import get_objective, get_spec
from prefrun.objectives.reference_free import log1mexp

ZOO = [
    "cdpo",
    "nca_pair",
    "exo_pair",
    "apo_zero",
    "apo_down",
    "discopop",
    "aot",
    "ln_dpo",
    "sppo_hard",
    "simpo",
    "orpo",
    "cpo",
    "slic",
    "asft",
    "sppo",
    "irepo",
    "kto",
    "bco",
]
REFERENCE_FREE = ["simpo", "orpo", "cpo", "slic", "asft"]
CONF = Path(__file__).resolve().parents[2] / "conf" / "objective"
TOL = dict(rel=1e-6, abs=1e-9)


# ---- scalar math, one example at a time ----


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ---- random batches ----


def pair_batch(seed: int, b: int = 7, ties: bool = False):
    """Pairs (K = 2) as float64 tensors plus python lists; scores distinct unless ``ties``."""
    rng = random.Random(seed)
    pol = [[-rng.uniform(5, 60) for _ in range(2)] for _ in range(b)]
    ref = [[-rng.uniform(5, 60) for _ in range(2)] for _ in range(b)]
    lens = [[rng.randint(3, 40) for _ in range(2)] for _ in range(b)]
    scores = [[rng.uniform(-2, 2) for _ in range(2)] for _ in range(b)]
    if ties:
        scores[0] = [0.3, 0.3]
    t = dict(dtype=torch.float64)
    return dict(
        pol=pol,
        ref=ref,
        lens=lens,
        scores=scores,
        policy_logps=torch.tensor(pol, **t),
        ref_logps=torch.tensor(ref, **t),
        scores_t=torch.tensor(scores, **t),
        lengths=torch.tensor(lens),
        mask=torch.ones(b, 2, dtype=torch.bool),
    )


def winner_loser(scores: list[float]) -> tuple[int, int]:
    """(winner, loser) indices of a pair: the higher score wins."""
    return (0, 1) if scores[0] >= scores[1] else (1, 0)


def run(name: str, d: dict, ref: bool = True, **kw):
    obj = get_objective(name, **kw)
    return obj(
        d["policy_logps"],
        d["ref_logps"] if ref else None,
        d["scores_t"],
        mask=d["mask"],
        lengths=d["lengths"],
    )


def pairs(d: dict):
    """Per example: (ℓ_w, ℓ_l, ref_w, ref_l, |y_w|, |y_l|)."""
    for p, r, n, s in zip(d["pol"], d["ref"], d["lens"], d["scores"]):
        w, lo = winner_loser(s)
        yield p[w], p[lo], r[w], r[lo], n[w], n[lo]


# ---- TRL-native pairwise, with reference ----


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cdpo(eps):
    d, beta = pair_batch(1), 0.3
    want = []
    for lw, ll, rw, rl, _, _ in pairs(d):
        z = beta * ((lw - rw) - (ll - rl))
        want.append(-(1 - eps) * logsig(z) - eps * logsig(-z))
    assert run("cdpo", d, beta=beta, label_smoothing=eps).loss.item() == pytest.approx(mean(want), **TOL)


def test_cdpo_with_zero_smoothing_is_dpo():
    d = pair_batch(2)
    assert run("cdpo", d, label_smoothing=0.0).loss.item() == pytest.approx(run("dpo", d).loss.item(), **TOL)


def test_nca_pair():
    d, beta = pair_batch(3), 0.05
    want = []
    for lw, ll, rw, rl, _, _ in pairs(d):
        a, b = beta * (lw - rw), beta * (ll - rl)
        want.append(-logsig(a) - 0.5 * logsig(-a) - 0.5 * logsig(-b))
    assert run("nca_pair", d, beta=beta).loss.item() == pytest.approx(mean(want), **TOL)


@pytest.mark.parametrize("eps", [1e-3, 0.2, 0.9])
def test_exo_pair(eps):
    d, beta = pair_batch(4), 0.1
    want = []
    for lw, ll, rw, rl, _, _ in pairs(d):
        z = beta * ((lw - rw) - (ll - rl))
        qw, ql = sig(z), sig(-z)
        want.append(qw * (math.log(qw) - math.log(1 - eps)) + ql * (math.log(ql) - math.log(eps)))
    assert run("exo_pair", d, beta=beta, label_smoothing=eps).loss.item() == pytest.approx(mean(want), **TOL)


def test_apo_zero():
    d, beta = pair_batch(5), 0.1
    want = [(1 - sig(beta * (lw - rw))) + sig(beta * (ll - rl)) for lw, ll, rw, rl, _, _ in pairs(d)]
    assert run("apo_zero", d, beta=beta).loss.item() == pytest.approx(mean(want), **TOL)


def test_apo_down():
    d, beta = pair_batch(6), 0.1
    want = [sig(beta * (lw - rw)) + (1 - sig(beta * ((lw - rw) - (ll - rl)))) for lw, ll, rw, rl, _, _ in pairs(d)]
    assert run("apo_down", d, beta=beta).loss.item() == pytest.approx(mean(want), **TOL)


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_discopop(tau):
    d, beta = pair_batch(7), 0.05
    want = []
    for lw, ll, rw, rl, _, _ in pairs(d):
        z = beta * ((lw - rw) - (ll - rl))
        m = sig(z / tau)
        want.append(-logsig(z) * (1 - m) + math.exp(-z) * m)
    assert run("discopop", d, beta=beta, tau=tau).loss.item() == pytest.approx(mean(want), **TOL)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_aot_sorts_across_the_batch(eps):
    d, beta = pair_batch(8), 0.1
    u = sorted(lw - ll for lw, ll, _, _, _, _ in pairs(d))
    v = sorted(rw - rl for _, _, rw, rl, _, _ in pairs(d))
    want = [-(1 - eps) * logsig(beta * (a - b)) - eps * logsig(-beta * (a - b)) for a, b in zip(u, v)]
    assert run("aot", d, beta=beta, label_smoothing=eps).loss.item() == pytest.approx(mean(want), **TOL)


def test_ln_dpo():
    d, beta = pair_batch(9), 2.0
    want = [-logsig(beta * ((lw - rw) / nw - (ll - rl) / nl)) for lw, ll, rw, rl, nw, nl in pairs(d)]
    assert run("ln_dpo", d, beta=beta).loss.item() == pytest.approx(mean(want), **TOL)


def test_sppo_hard():
    d, beta = pair_batch(10), 0.01
    want = [((lw - rw) - 1 / (2 * beta)) ** 2 + ((ll - rl) + 1 / (2 * beta)) ** 2 for lw, ll, rw, rl, _, _ in pairs(d)]
    assert run("sppo_hard", d, beta=beta).loss.item() == pytest.approx(mean(want), **TOL)


# ---- reference-free ----


def test_simpo():
    d, beta, ratio = pair_batch(11), 2.5, 0.55
    want = [-logsig(beta * lw / nw - beta * ll / nl - ratio * beta) for lw, ll, _, _, nw, nl in pairs(d)]
    assert run("simpo", d, beta=beta, gamma_beta_ratio=ratio).loss.item() == pytest.approx(mean(want), **TOL)


def chosen_token_nll(d: dict) -> float:
    rows = list(pairs(d))
    return -sum(r[0] for r in rows) / sum(r[4] for r in rows)


def test_orpo():
    d, lam = pair_batch(12), 0.2
    ratios = []
    for lw, ll, _, _, nw, nl in pairs(d):
        pw, pl = math.exp(lw / nw), math.exp(ll / nl)
        ratios.append(logsig(math.log(pw / (1 - pw)) - math.log(pl / (1 - pl))))
    out = run("orpo", d, beta=lam)
    assert out.loss.item() == pytest.approx(chosen_token_nll(d) - lam * mean(ratios), **TOL)
    assert out.metrics["nll_loss"] == pytest.approx(chosen_token_nll(d), **TOL)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.3])
def test_cpo(alpha):
    d, beta = pair_batch(13), 0.1
    pref = mean([-logsig(beta * (lw - ll)) for lw, ll, _, _, _, _ in pairs(d)])
    got = run("cpo", d, beta=beta, cpo_alpha=alpha).loss.item()
    assert got == pytest.approx(pref + alpha * chosen_token_nll(d), **TOL)


def test_slic():
    d, delta, lam = pair_batch(14), 5.0, 0.5
    want = [max(0.0, delta - lw + ll) - lam * lw for lw, ll, _, _, _, _ in pairs(d)]
    assert any(delta - lw + ll <= 0 for lw, ll, *_ in pairs(d))  # both sides of the hinge are exercised
    assert run("slic", d, delta=delta, reg_weight=lam).loss.item() == pytest.approx(mean(want), **TOL)


def test_asft():
    d, lam = pair_batch(15), 0.1
    want = []
    for lw, ll, _, _, nw, nl in pairs(d):
        pw, pl = math.exp(lw / nw), math.exp(ll / nl)
        odds_w, odds_l = math.log(pw / (1 - pw)), math.log(pl / (1 - pl))
        want.append(-math.log(pw) - lam * (logsig(odds_w) + logsig(-odds_l)))
    assert run("asft", d, align_weight=lam).loss.item() == pytest.approx(mean(want), **TOL)


@pytest.mark.parametrize("name", REFERENCE_FREE)
def test_reference_free_ignores_ref_logps(name):
    d = pair_batch(16)
    spec = get_spec(name)
    assert spec.needs_reference is False
    with_ref = run(name, d, ref=True).loss.item()
    without = run(name, d, ref=False).loss.item()
    assert with_ref == without


@pytest.mark.parametrize("x", [-50.0, -3.0, -0.7, -0.69, -1e-3, -1e-9, -1e-300])
def test_log1mexp_is_accurate(x):
    got = log1mexp(torch.tensor([x], dtype=torch.float64)).item()
    assert got == pytest.approx(math.log(-math.expm1(x)), rel=1e-12)


def test_log1mexp_at_zero_is_finite_with_finite_gradient():
    x = torch.tensor([0.0, -1e-20, -2.0], dtype=torch.float64, requires_grad=True)
    y = log1mexp(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


# ---- soft labels ----


def test_sppo_on_padded_lists():
    rng = random.Random(17)
    b, k, beta = 5, 4, 0.01
    real = [
        [True] * k,
        [True, True, False, False],
        [True, True, True, False],
        [True] * k,
        [True, False, True, True],
    ]
    pol = [[-rng.uniform(5, 60) for _ in range(k)] for _ in range(b)]
    ref = [[-rng.uniform(5, 60) for _ in range(k)] for _ in range(b)]
    scores = [[rng.uniform(-3, 3) for _ in range(k)] for _ in range(b)]
    want = []
    for i in range(b):
        idx = [j for j in range(k) if real[i][j]]
        win_rate = {a: mean([sig(scores[i][a] - scores[i][c]) for c in idx]) for a in idx}
        w = max(idx, key=lambda j: scores[i][j])
        lo = min(idx, key=lambda j: scores[i][j])
        rho_w, rho_l = pol[i][w] - ref[i][w], pol[i][lo] - ref[i][lo]
        err_w = rho_w - (win_rate[w] - 0.5) / beta
        err_l = rho_l - (win_rate[lo] - 0.5) / beta
        want.append(0.5 * (err_w**2 + err_l**2))
    # padding carries garbage that must not leak in
    scores_t = torch.tensor(scores, dtype=torch.float64).masked_fill(~torch.tensor(real), 1e6)
    obj = get_objective("sppo", beta=beta)
    out = obj(
        torch.tensor(pol, dtype=torch.float64),
        torch.tensor(ref, dtype=torch.float64),
        scores_t,
        mask=torch.tensor(real),
        lengths=torch.full((b, k), 7),
    )
    assert get_spec("sppo").data == "list"
    assert out.loss.item() == pytest.approx(mean(want), **TOL)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_irepo_from_scores():
    d, beta, clip = pair_batch(18), 0.5, 0.01
    want = []
    for (lw, ll, rw, rl, _, _), s in zip(pairs(d), d["scores"]):
        p = min(max(sig(max(s) - min(s)), clip), 1 - clip)
        want.append((beta * ((lw - rw) - (ll - rl)) - logit(p)) ** 2)
    assert run("irepo", d, beta=beta, p_clip=clip).loss.item() == pytest.approx(mean(want), **TOL)


def test_irepo_with_p_chosen_clips_and_keeps_tied_pairs():
    d, beta, clip = pair_batch(19, ties=True), 0.2, 0.05
    rng = random.Random(19)
    p_chosen = [1.0, 0.0, 0.5] + [rng.random() for _ in range(len(d["pol"]) - 3)]
    want = []
    for i, (p, r, s) in enumerate(zip(d["pol"], d["ref"], d["scores"])):
        w, lo = (0, 1) if s[0] >= s[1] else (1, 0)  # a tie: entry 0 is w
        q = min(max(p_chosen[i], clip), 1 - clip)
        want.append((beta * ((p[w] - r[w]) - (p[lo] - r[lo])) - logit(q)) ** 2)
    obj = get_objective("irepo", beta=beta, p_clip=clip)
    out = obj(
        d["policy_logps"],
        d["ref_logps"],
        d["scores_t"],
        mask=d["mask"],
        lengths=d["lengths"],
        p_chosen=torch.tensor(p_chosen, dtype=torch.float64),
    )
    assert out.loss.item() == pytest.approx(mean(want), **TOL)


# ---- unpaired ----


def unpaired_batch(seed: int, b: int = 9):
    rng = random.Random(seed)
    pol = [-rng.uniform(5, 60) for _ in range(b)]
    ref = [-rng.uniform(5, 60) for _ in range(b)]
    labels = [rng.random() < 0.6 for _ in range(b)]
    labels[0], labels[1] = True, False
    t = dict(dtype=torch.float64)
    return dict(
        pol=pol,
        ref=ref,
        labels=labels,
        args=(torch.tensor(pol, **t)[:, None], torch.tensor(ref, **t)[:, None], torch.zeros(b, 1, **t)),
        kw=dict(
            mask=torch.ones(b, 1, dtype=torch.bool),
            lengths=torch.full((b, 1), 9),
            labels=torch.tensor(labels)[:, None],
        ),
    )


@pytest.mark.parametrize("kl_shift", [0.0, -40.0])  # the second makes mean(kl) < 0, so z₀ = 0
def test_kto(kl_shift):
    u, beta, wd, wu = unpaired_batch(20), 0.1, 1.0, 1.33
    rng = random.Random(21)
    kl = [rng.uniform(-5, 15) + kl_shift for _ in u["pol"]]
    z0 = max(0.0, mean(kl))
    want = []
    for p, r, good in zip(u["pol"], u["ref"], u["labels"]):
        rho = p - r
        want.append(wd * (1 - sig(beta * (rho - z0))) if good else wu * (1 - sig(beta * (z0 - rho))))
    obj = get_objective("kto", beta=beta, desirable_weight=wd, undesirable_weight=wu)
    out = obj(*u["args"], **u["kw"], kl_logratios=torch.tensor(kl, dtype=torch.float64))
    assert out.loss.item() == pytest.approx(mean(want), **TOL)
    assert out.metrics["kl"] == pytest.approx(z0, **TOL)


def test_kto_z0_is_detached():
    u = unpaired_batch(22)
    kl = torch.full((9,), 3.0, dtype=torch.float64, requires_grad=True)
    pol = u["args"][0].clone().requires_grad_(True)
    get_objective("kto")(pol, *u["args"][1:], **u["kw"], kl_logratios=kl).loss.backward()
    assert kl.grad is None and pol.grad is not None


def test_bco():
    u, beta, delta = unpaired_batch(23), 0.1, -1.7
    want = []
    for p, r, good in zip(u["pol"], u["ref"], u["labels"]):
        rew = beta * (p - r)
        want.append(-logsig(rew - delta) if good else -logsig(-(rew - delta)))
    out = get_objective("bco", beta=beta)(*u["args"], **u["kw"], reward_shift=torch.tensor(delta))
    assert out.loss.item() == pytest.approx(mean(want), **TOL)
    assert out.metrics["reward_shift"] == pytest.approx(delta)


def test_unpaired_metrics_split_by_label():
    u, beta = unpaired_batch(24), 0.1
    out = get_objective("bco", beta=beta)(*u["args"], **u["kw"], reward_shift=torch.tensor(0.0))
    good = [beta * (p - r) for p, r, g in zip(u["pol"], u["ref"], u["labels"]) if g]
    bad = [beta * (p - r) for p, r, g in zip(u["pol"], u["ref"], u["labels"]) if not g]
    assert out.metrics["rewards/chosen"] == pytest.approx(mean(good), **TOL)
    assert out.metrics["rewards/rejected"] == pytest.approx(mean(bad), **TOL)
    acc = mean([float((x > 0) == g) for x, g in zip([beta * (p - r) for p, r in zip(u["pol"], u["ref"])], u["labels"])])
    assert out.metrics["rewards/accuracies"] == pytest.approx(acc)


# ---- every objective: finite loss and gradients at extreme inputs ----


def extras(name: str, b: int) -> dict[str, torch.Tensor]:
    if name == "kto":
        return dict(labels=torch.tensor([True, False] * (b // 2))[:, None], kl_logratios=torch.zeros(b))
    if name == "bco":
        return dict(labels=torch.tensor([True, False] * (b // 2))[:, None], reward_shift=torch.tensor(0.0))
    return {}


@pytest.mark.parametrize("name", ZOO)
def test_extreme_inputs_stay_finite(name):
    spec = get_spec(name)
    k = 1 if spec.data == "unpaired" else 2
    b = 4
    pol = torch.tensor([[0.0, -3e3], [-3e3, 0.0], [-1e-12, -2e3], [-500.0, -0.0]], dtype=torch.float32)[:, :k]
    pol.requires_grad_(True)
    ref = torch.tensor([[-3e3, 0.0], [0.0, -3e3], [-2e3, -1e-12], [-0.0, -500.0]], dtype=torch.float32)[:, :k]
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0], [0.5, 0.4]])[:, :k]
    out = get_objective(name)(
        pol, ref if spec.needs_reference else None, scores, lengths=torch.full((b, k), 5), **extras(name, b)
    )
    out.loss.backward()
    assert torch.isfinite(out.loss), out.loss
    assert torch.isfinite(pol.grad).all(), pol.grad


# ---- validation ----

BAD = [
    ("cdpo", "label_smoothing", 0.5),
    ("cdpo", "label_smoothing", -0.1),
    ("exo_pair", "label_smoothing", 0.0),
    ("exo_pair", "label_smoothing", 1.0),
    ("discopop", "tau", 0.0),
    ("aot", "label_smoothing", 0.5),
    ("simpo", "gamma_beta_ratio", -0.1),
    ("cpo", "cpo_alpha", -1.0),
    ("slic", "delta", -1.0),
    ("slic", "reg_weight", -0.5),
    ("asft", "align_weight", -0.1),
    ("irepo", "p_clip", 0.0),
    ("irepo", "p_clip", 0.5),
    ("kto", "desirable_weight", 0.0),
    ("kto", "undesirable_weight", -1.0),
    ("cdpo", "label_smoothing", float("nan")),
    ("asft", "align_weight", "lots"),
]


@pytest.mark.parametrize(("name", "field", "value"), BAD)
def test_bad_hyperparameters_are_one_line_errors(name, field, value):
    with pytest.raises(PrefrunError) as info:
        get_objective(name, **{field: value})
    message = str(info.value)
    assert f"objective.{field}=" in message and "\n" not in message


@pytest.mark.parametrize("name", ["cdpo", "exo_pair", "sppo", "kto", "bco", "orpo", "nca_pair"])
def test_beta_must_be_positive(name):
    with pytest.raises(PrefrunError, match="objective.beta="):
        get_objective(name, beta=0.0)


@pytest.mark.parametrize(
    ("name", "hp"),
    [
        ("cdpo", {"label_smoothing": 0.0}),
        ("aot", {"label_smoothing": 0.49}),
        ("exo_pair", {"label_smoothing": 0.5}),
        ("simpo", {"gamma_beta_ratio": 0.0}),
        ("cpo", {"cpo_alpha": 0.0}),
        ("slic", {"delta": 0.0, "reg_weight": 0.0}),
        ("asft", {"align_weight": 0.0}),
        ("irepo", {"p_clip": 0.49}),
    ],
)
def test_boundary_values_are_accepted(name, hp):
    get_objective(name, **hp)


# ---- YAML ↔ registry ----


@pytest.mark.parametrize("name", ZOO)
def test_yaml_matches_registry(name):
    path = CONF / f"{name}.yaml"
    conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert path.read_text(encoding="utf-8").startswith("# "), "first line cites the paper"
    spec = get_spec(conf.pop("name"))
    assert spec.name == name
    assert conf.pop("data") == spec.data
    assert conf.pop("needs_reference") is spec.needs_reference
    for key in ("udm", "baselines"):  # run settings around the loss (objectives.config.OBJECTIVE_META), not hparams
        conf.pop(key, None)
    assert set(conf) == set(spec.defaults)
    for key, value in conf.items():
        assert value == pytest.approx(spec.defaults[key]), key
    get_objective(name, **conf)
