"""Specification of the list objectives (prefrun/objectives/listwise.py).

Each objective is checked against a reference written straight from its formula as plain Python
loops over lists and pairs (floats and the math module only), on batches with ties, padding that
holds garbage, K = 2, K = 8 and lists of different lengths in one batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from prefrun.errors import PrefrunError
from prefrun.objectives import get_objective, get_spec
from prefrun.objectives import listwise as lw

LIST_OBJECTIVES = ["lipo", "listmle", "list_softmax", "pairwise_all", "pro"]
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "objective"


# --------------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    policy: torch.Tensor
    ref: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor

    def run(self, name: str, **hparams):
        """Loss and metrics of objective ``name``; ``policy`` and ``ref`` get fresh gradients."""
        self.policy = self.policy.detach().requires_grad_(True)
        self.ref = self.ref.detach().requires_grad_(True)
        obj = get_objective(name, **hparams)
        return obj(self.policy, self.ref, self.scores, mask=self.mask, lengths=self.lengths)

    def lists(self) -> list[list[dict[str, float]]]:
        """The real entries of each list, in list order, as Python floats."""
        out = []
        policy, ref = self.policy.detach(), self.ref.detach()
        for b in range(self.mask.shape[0]):
            out.append(
                [
                    {
                        "psi": float(self.scores[b, i]),
                        "logp": float(policy[b, i]),
                        "ref": float(ref[b, i]),
                        "len": float(self.lengths[b, i]),
                    }
                    for i in range(self.mask.shape[1])
                    if self.mask[b, i]
                ]
            )
        return out


def make_batch(
    ks: list[int],
    k_max: int,
    grades: list[float],
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    all_tied: tuple[int, ...] = (),
) -> Batch:
    """Lists with ``ks[b]`` real entries at random positions, scores drawn from ``grades`` (so ties
    occur), and padded entries holding garbage (NaN log-probs, score 1e4, length 0)."""
    g = torch.Generator().manual_seed(seed)
    b = len(ks)
    mask = torch.zeros(b, k_max, dtype=torch.bool)
    for row, k in enumerate(ks):
        mask[row, torch.randperm(k_max, generator=g)[:k]] = True
    grade_t = torch.tensor(grades, dtype=dtype)
    scores = grade_t[torch.randint(len(grades), (b, k_max), generator=g)]
    for row in all_tied:
        scores[row] = grades[0]
    policy = -20 + 5 * torch.randn(b, k_max, generator=g, dtype=dtype)
    ref = -20 + 5 * torch.randn(b, k_max, generator=g, dtype=dtype)
    lengths = torch.randint(1, 30, (b, k_max), generator=g).to(dtype)
    nan = torch.full_like(policy, float("nan"))
    return Batch(
        policy=torch.where(mask, policy, nan),
        ref=torch.where(mask, ref, nan),
        scores=torch.where(mask, scores, torch.full_like(scores, 1e4)),
        mask=mask,
        lengths=torch.where(mask, lengths, torch.zeros_like(lengths)),
    )


CASES = {
    "K=2": dict(ks=[2] * 6, k_max=2, grades=[0.0, 0.5, 1.0]),
    "K=8": dict(ks=[8] * 5, k_max=8, grades=[0.0, 0.25, 0.5, 0.75, 1.0]),
    # one list of a single entry, one list whose scores are all tied
    "variable K": dict(ks=[8, 2, 5, 3, 1, 6], k_max=8, grades=[0.0, 0.25, 0.5, 0.75, 1.0], all_tied=(2,)),
    "negative scores": dict(ks=[4, 6, 3], k_max=6, grades=[-1.0, -0.5, 0.0, 0.5]),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def batch(request) -> Batch:
    return make_batch(**CASES[request.param], seed=len(request.param))


# --------------------------------------------------------------------------------------------------
# The formulas, as plain loops


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def ranked_by_score(entries: list[dict[str, float]]) -> list[dict[str, float]]:
    """Best first; Python's sort is stable, so tied entries keep their list order."""
    return sorted(entries, key=lambda e: -e["psi"])


def ranks(s: list[float]) -> list[int]:
    """1-based rank of each entry under s, descending; ties keep list order (stable sort)."""
    rank = [0] * len(s)
    for r, i in enumerate(sorted(range(len(s)), key=lambda i: -s[i]), start=1):
        rank[i] = r
    return rank


def lambda_weight(gain: list[float], rank: list[int], i: int, j: int) -> float:
    """Δ_ij = |G_i − G_j| · |1/D(τ_i) − 1/D(τ_j)|, D(r) = ln(1 + r)."""
    return abs(gain[i] - gain[j]) * abs(1 / math.log(1 + rank[i]) - 1 / math.log(1 + rank[j]))


def loop_lipo(batch: Batch, beta: float = 0.05) -> float:
    per_list = []
    for entries in batch.lists():
        s = [beta * (e["logp"] - e["ref"]) for e in entries]
        n = len(s)
        rank = ranks(s)
        gain = [2 ** e["psi"] - 1 for e in entries]
        total, pairs = 0.0, 0
        for i in range(n):
            for j in range(n):
                if entries[i]["psi"] > entries[j]["psi"]:
                    delta = lambda_weight(gain, rank, i, j)
                    total += delta * softplus(-(s[i] - s[j]))
                    pairs += 1
        if pairs:
            per_list.append(total / pairs)
    return mean(per_list)


def loop_pairwise_all(batch: Batch, beta: float = 0.1) -> float:
    per_list = []
    for entries in batch.lists():
        s = [beta * (e["logp"] - e["ref"]) for e in entries]
        losses = [
            softplus(-(s[i] - s[j]))
            for i in range(len(s))
            for j in range(len(s))
            if entries[i]["psi"] > entries[j]["psi"]
        ]
        if losses:
            per_list.append(mean(losses))
    return mean(per_list)


def loop_listmle(batch: Batch, beta: float = 0.1) -> float:
    per_list = []
    for entries in batch.lists():
        if len(entries) < 2:
            continue
        s = [beta * (e["logp"] - e["ref"]) for e in ranked_by_score(entries)]
        per_list.append(-sum(s[k] - logsumexp(s[k:]) for k in range(len(s) - 1)))
    return mean(per_list)


def loop_list_softmax(batch: Batch, beta: float = 0.1) -> float:
    per_list = []
    for entries in batch.lists():
        n = len(entries)
        if n < 2:
            continue
        s = [beta * (e["logp"] - e["ref"]) for e in entries]
        psi = [e["psi"] for e in entries]
        if min(psi) < 0:
            psi = [p - min(psi) for p in psi]
        target = [p / sum(psi) for p in psi] if sum(psi) > 0 else [1 / n] * n
        lse = logsumexp(s)
        per_list.append(-sum(t * (si - lse) for t, si in zip(target, s, strict=True)))
    return mean(per_list)


def loop_pro(batch: Batch, sft_weight: float = 0.05) -> float:
    per_list = []
    for entries in batch.lists():
        n = len(entries)
        if n < 2:
            continue
        ranked = ranked_by_score(entries)
        s = [e["logp"] / e["len"] for e in ranked]
        r = [e["psi"] for e in ranked]
        total = 0.0
        for k in range(n - 1):
            worse = [i for i in range(k + 1, n) if r[i] < r[k]]  # tied responses are dropped
            if not worse:
                continue
            t_kk = max(r[k] - r[i] for i in range(k + 1, n))
            logits = [s[k] * t_kk] + [s[i] * (r[k] - r[i]) for i in worse]
            total += -(s[k] * t_kk - logsumexp(logits))
        total += sft_weight * (n - 1) ** 2 * -ranked[0]["logp"]
        per_list.append(total)
    return mean(per_list)


LOOPS = {
    "lipo": loop_lipo,
    "listmle": loop_listmle,
    "list_softmax": loop_list_softmax,
    "pairwise_all": loop_pairwise_all,
    "pro": loop_pro,
}


# --------------------------------------------------------------------------------------------------
# Each objective equals its formula


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
def test_objective_equals_its_formula_written_as_loops(name, batch):
    """The vectorised loss matches the plain-loop formula with ties, padding and variable K."""
    loss = batch.run(name).loss
    assert loss.item() == pytest.approx(LOOPS[name](batch), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
def test_objective_equals_its_formula_with_non_default_hyperparameters(name):
    b = make_batch(**CASES["variable K"], seed=7)
    hp = {"sft_weight": 1.5} if name == "pro" else {"beta": 0.37}
    assert b.run(name, **hp).loss.item() == pytest.approx(LOOPS[name](b, *hp.values()), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
def test_gradient_equals_finite_differences_of_the_formula(name):
    """Autograd through the objective agrees with central differences of the loop formula."""
    b = make_batch(**CASES["variable K"], seed=3)
    b.run(name).loss.backward()
    eps = 1e-6
    for row, col in b.mask.nonzero().tolist():
        shifted = []
        for sign in (1, -1):
            policy = b.policy.detach().clone()
            policy[row, col] += sign * eps
            shifted.append(LOOPS[name](replace(b, policy=policy)))
        numeric = (shifted[0] - shifted[1]) / (2 * eps)
        assert b.policy.grad[row, col].item() == pytest.approx(numeric, rel=1e-5, abs=1e-7)


# --------------------------------------------------------------------------------------------------
# Padding, gradients, stability


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -1e4, 0.0])
def test_padded_entries_do_not_matter_and_get_no_gradient(name, garbage):
    b = make_batch(**CASES["variable K"], seed=1)
    clean = b.run(name).loss.item()
    fill = torch.full_like(b.policy, garbage)
    dirty = replace(
        b,
        policy=torch.where(b.mask, b.policy.detach(), fill),
        ref=torch.where(b.mask, b.ref.detach(), fill),
        scores=torch.where(b.mask, b.scores, fill),
        lengths=torch.where(b.mask, b.lengths, fill),
    )
    out = dirty.run(name)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(clean, rel=1e-12)
    assert torch.all(dirty.policy.grad[~b.mask] == 0)
    assert dirty.ref.grad is None or torch.all(dirty.ref.grad[~b.mask] == 0)  # pro ignores ref


@pytest.mark.parametrize("name", ["lipo", "listmle", "list_softmax", "pairwise_all"])
def test_reference_objectives_depend_only_on_the_log_ratio(name):
    """Gradients flow only through s = β·(policy − ref): ∂L/∂ref = −∂L/∂policy."""
    b = make_batch(**CASES["K=8"], seed=2)
    b.run(name).loss.backward()
    torch.testing.assert_close(b.ref.grad, -b.policy.grad)
    shifted = replace(b, policy=b.policy.detach() + 3.0, ref=b.ref.detach() + 3.0)
    assert shifted.run(name).loss.item() == pytest.approx(b.run(name).loss.item(), rel=1e-12)


def test_lipo_gradient_treats_the_lambda_weights_as_constants():
    """∂L/∂policy_i = β/(#lists·P) Σ_pairs Δ_ij·(−σ(−(s_i − s_j))) (+ the mirror term for losers):
    Δ, built from ranks under detached scores, contributes no gradient of its own."""
    b = make_batch(**CASES["variable K"], seed=5)
    beta = 0.05
    b.run("lipo").loss.backward()
    lists = b.lists()
    positions = [b.mask[row].nonzero()[:, 0].tolist() for row in range(len(lists))]
    counted = []
    expected = torch.zeros_like(b.policy)
    for row, entries in enumerate(lists):
        s = [beta * (e["logp"] - e["ref"]) for e in entries]
        n = len(s)
        rank = ranks(s)
        gain = [2 ** e["psi"] - 1 for e in entries]
        pairs = [(i, j) for i in range(n) for j in range(n) if entries[i]["psi"] > entries[j]["psi"]]
        if not pairs:
            continue
        counted.append(row)
        for i, j in pairs:
            delta = lambda_weight(gain, rank, i, j)
            push = delta / (1 + math.exp(s[i] - s[j])) * beta / len(pairs)  # Δ·σ(−(s_i − s_j))·β / P
            expected[row, positions[row][i]] -= push
            expected[row, positions[row][j]] += push
    expected /= len(counted)
    torch.testing.assert_close(b.policy.grad, expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_huge_log_probs_give_finite_loss_and_gradients(name, magnitude):
    """Stable in float32 with log-probs of ±1e4 (logsumexp form, no exp-then-sum)."""
    b = make_batch(**CASES["variable K"], seed=4, dtype=torch.float32)
    spread = torch.linspace(-1, 1, b.policy.shape[1])
    b.policy = torch.where(b.mask, magnitude * (1 + spread) * torch.ones_like(b.policy), b.policy)
    b.ref = torch.where(b.mask, torch.zeros_like(b.ref), b.ref)
    b.lengths = torch.where(b.mask, torch.ones_like(b.lengths), b.lengths)
    out = b.run(name)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(b.policy.grad).all()
    assert b.ref.grad is None or torch.isfinite(b.ref.grad).all()  # pro ignores ref


# --------------------------------------------------------------------------------------------------
# Reductions to DPO and to each other


def untied_pairs(seed: int = 0) -> Batch:
    """K = 2 lists with distinct scores, the chosen response sometimes in the second slot."""
    b = make_batch([2] * 8, 2, [0.0], seed=seed)
    g = torch.Generator().manual_seed(seed)
    b.scores = torch.rand(8, 2, generator=g, dtype=torch.float64)
    return b


@pytest.mark.parametrize("name", ["pairwise_all", "listmle"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_pair_objectives_equal_dpo_with_two_responses(name, beta):
    """With K = 2 both the all-pairs logistic and Plackett-Luce are DPO's −log σ(β·(ρ_w − ρ_l))."""
    b = untied_pairs()
    out = b.run(name, beta=beta)
    out.loss.backward()
    grad = b.policy.grad.clone()
    dpo = b.run("dpo", beta=beta)
    dpo.loss.backward()
    torch.testing.assert_close(out.loss, dpo.loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, b.policy.grad, rtol=1e-12, atol=1e-12)


def test_lipo_with_two_responses_is_dpo_weighted_by_the_first_two_discounts():
    """K = 2, ψ = (1, 0): Δ = |2¹ − 2⁰|·|1/ln 2 − 1/ln 3| whichever response the model ranks first."""
    policy = torch.tensor([[-3.0, -5.0], [-6.0, -2.0]], dtype=torch.float64)
    ref = torch.zeros_like(policy)
    scores = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    loss = get_objective("lipo", beta=0.5)(policy, ref, scores).loss
    delta = 1 / math.log(2) - 1 / math.log(3)
    expected = delta * (softplus(-0.5 * 2.0) + softplus(-0.5 * -4.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_pro_with_unit_reward_gap_is_reference_free_listmle_on_average_log_probs():
    """Two responses one reward unit apart: T = 1, so PRO's ranking term is Plackett-Luce on ℓ/|y|."""
    b = untied_pairs(seed=1)
    b.scores = torch.tensor([[1.0, 0.0], [3.0, 4.0]] * 4, dtype=torch.float64)
    pro = b.run("pro", sft_weight=0.0).loss
    avg = b.policy.detach() / b.lengths
    listmle = get_objective("listmle", beta=1.0)(avg, torch.zeros_like(avg), b.scores).loss
    torch.testing.assert_close(pro, listmle, rtol=1e-12, atol=1e-12)


def test_pro_ranking_term_with_unit_temperatures_is_listmle_on_average_log_probs():
    """PRO (Song et al. 2023, arXiv 2306.17492) with every T = 1: its ranking term is reference-free list-MLE
    on ℓ/|y|."""
    b = make_batch(**CASES["K=8"], seed=6)
    order = lw._rank_order(b.scores, b.mask)
    avg = b.policy / b.lengths
    k = torch.arange(8)
    later = (k[None, :, None] < k[None, None, :]).expand(b.mask.shape[0], 8, 8)
    unit = torch.ones(b.mask.shape[0], 8, 8, dtype=avg.dtype)
    ranking = lw._plackett_luce(avg.gather(1, order), unit, later)
    plain = replace(b, policy=avg, ref=torch.zeros_like(avg))
    assert ranking.mean().item() == pytest.approx(loop_listmle(plain, beta=1.0), rel=1e-10)


# --------------------------------------------------------------------------------------------------
# Ties and lists with nothing to rank


def _three(scores: list[float], policy: list[float]):
    p = torch.tensor([policy], dtype=torch.float64)
    return p, torch.zeros_like(p), torch.tensor([scores], dtype=torch.float64)


def test_pro_drops_a_response_tied_with_the_positive_from_its_term():
    """ψ = (1, 1, 0): y² is tied with y¹, so term 1 is −log softmax over {y¹, y³} only; the reference
    code would have kept y² with logit 0, the largest logit possible when s < 0."""
    p, r, scores = _three([1.0, 1.0, 0.0], [-1.0, -2.0, -3.0])
    loss = get_objective("pro", sft_weight=0.0)(p, r, scores).loss
    s1, s2, s3 = -1.0, -2.0, -3.0
    expected = -(s1 - logsumexp([s1, s3])) - (s2 - logsumexp([s2, s3]))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_pro_skips_a_term_with_no_strictly_worse_response():
    """ψ = (1, 0.5, 0.5): term 2 compares two tied responses and is skipped; T_1^1 = 0.5."""
    p, r, scores = _three([1.0, 0.5, 0.5], [-1.0, -2.0, -3.0])
    loss = get_objective("pro", sft_weight=0.0)(p, r, scores).loss
    x = [0.5 * -1.0, 0.5 * -2.0, 0.5 * -3.0]
    assert loss.item() == pytest.approx(-(x[0] - logsumexp(x)), rel=1e-12)


def test_pro_with_all_scores_tied_keeps_only_the_sft_term_on_the_first_response():
    p, r, scores = _three([0.3, 0.3, 0.3], [-4.0, -2.0, -3.0])
    loss = get_objective("pro", sft_weight=0.5)(p, r, scores).loss
    assert loss.item() == pytest.approx(0.5 * (3 - 1) ** 2 * 4.0, rel=1e-12)


def test_listmle_orders_tied_scores_by_list_position():
    """Stable sort: of two tied responses the earlier one is treated as preferred."""
    p, r, scores = _three([0.5, 0.5, 0.0], [-1.0, -2.0, -3.0])
    loss = get_objective("listmle", beta=1.0)(p, r, scores).loss
    expected = -(-1.0 - logsumexp([-1.0, -2.0, -3.0])) - (-2.0 - logsumexp([-2.0, -3.0]))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_list_softmax_uses_uniform_targets_when_all_scores_are_equal():
    p, r, scores = _three([0.7, 0.7, 0.7], [-1.0, -2.0, -3.0])
    loss = get_objective("list_softmax", beta=1.0)(p, r, scores).loss
    lse = logsumexp([-1.0, -2.0, -3.0])
    assert loss.item() == pytest.approx(-sum((x - lse) / 3 for x in (-1.0, -2.0, -3.0)), rel=1e-12)


def test_list_softmax_shifts_a_list_with_negative_scores_by_its_minimum():
    """ψ = (1, 0, −1) → targets (2, 1, 0)/3; non-negative ψ = (2, 1, 0) gives the same targets unshifted."""
    p, r, _ = _three([0, 0, 0], [-1.0, -2.0, -3.0])
    negative = get_objective("list_softmax")(p, r, torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64))
    positive = get_objective("list_softmax")(p, r, torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64))
    assert negative.loss.item() == pytest.approx(positive.loss.item(), rel=1e-12)


@pytest.mark.parametrize("name", ["lipo", "pairwise_all"])
def test_pair_objectives_ignore_lists_without_a_strict_pair(name):
    """A list whose scores are all tied has no pair: it neither adds to nor dilutes the mean."""
    b = make_batch(**CASES["K=8"], seed=8, all_tied=(0,))
    rest = Batch(b.policy[1:], b.ref[1:], b.scores[1:], b.mask[1:], b.lengths[1:])
    assert b.run(name).loss.item() == pytest.approx(rest.run(name).loss.item(), rel=1e-12)


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
def test_batch_with_nothing_to_rank_gives_zero_loss_with_a_graph(name):
    b = make_batch([1, 1], 3, [0.0], seed=9)
    out = b.run(name)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert torch.all(b.policy.grad == 0)


# --------------------------------------------------------------------------------------------------
# Registry, metrics and configs


EXPECTED_SPECS = {
    "lipo": (True, {"beta": 0.05}),
    "listmle": (True, {"beta": 0.1}),
    "list_softmax": (True, {"beta": 0.1}),
    "pairwise_all": (True, {"beta": 0.1}),
    "pro": (False, {"sft_weight": 0.05}),
}


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
def test_list_objectives_are_registered_with_their_metadata(name):
    spec = get_spec(name)
    needs_reference, defaults = EXPECTED_SPECS[name]
    assert (spec.data, spec.min_k) == ("list", 2)
    assert spec.needs_reference is needs_reference
    assert spec.defaults == defaults


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
def test_list_objectives_log_the_core_metrics_under_dpos_names(name):
    b = untied_pairs()
    core = set(b.run("dpo").metrics)
    metrics = b.run(name).metrics
    assert core <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())


def test_pro_rejects_a_negative_sft_weight():
    with pytest.raises(PrefrunError, match="sft_weight"):
        get_objective("pro", sft_weight=-1.0)


def test_pro_sft_term_weighs_the_summed_log_prob_of_the_top_response_by_n_minus_one_squared():
    b = make_batch([4, 2], 4, [0.0, 0.25, 0.5, 1.0], seed=10)
    with_sft = b.run("pro", sft_weight=1.0).loss.item()
    without = b.run("pro", sft_weight=0.0).loss.item()
    tops = [ranked_by_score(entries)[0] for entries in b.lists()]
    expected = mean([(4 - 1) ** 2 * -tops[0]["logp"], (2 - 1) ** 2 * -tops[1]["logp"]])
    assert with_sft - without == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("name", LIST_OBJECTIVES)
def test_every_list_objective_has_a_yaml(name):
    assert (CONF_DIR / f"{name}.yaml").is_file()
