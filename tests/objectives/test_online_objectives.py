"""The online objectives (rloo, grpo, p3o): per-sample loops of the formulas, and parity with TRL 1.16.

The loops restate each docstring's formula one sample (or pair) at a time in plain Python floats. The
parity tests build TRL's own ``RLOOTrainer`` / ``GRPOTrainer`` on the micro model, feed its
``_generate_and_score_completions`` fixed completions and rewards (its generation stubbed, everything else
TRL's: reference model, old log-probs, KL, advantages) and compare ``_compute_loss`` with prefrun's objective
on the same model's summed log-probs (prefrun.lm), loss and gradient.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from prefrun.data.collator import ListCollator
from prefrun.errors import PrefrunError
from prefrun.lm.logprobs import response_logps
from prefrun.objectives import get_objective, get_spec


def _clip_term(ratio: float, adv: float, lo: float, hi: float) -> float:
    return min(ratio * adv, min(max(ratio, 1 - lo), 1 + hi) * adv)


def _random_batch(seed: int, b: int = 4, k: int = 4, spread: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    policy = -5 + torch.randn(b, k, generator=g)
    old = policy + spread * torch.randn(b, k, generator=g)  # ratios e^{±0.4}: some clipped at ε = 0.2
    ref = old + 0.3 * torch.randn(b, k, generator=g)
    scores = torch.randn(b, k, generator=g)
    lengths = torch.randint(1, 6, (b, k), generator=g).float()
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[1, k - 1] = False  # a missing sample (an unscorable one: its reward NaN, never read)
    scores[1, k - 1] = float("nan")
    mask[2, 1:] = False  # a list with a single sample: no baseline, no pair
    return policy, ref, scores, mask, lengths, old


# --- the formulas, one sample at a time ---------------------------------------------------------------


def rloo_loop(policy, ref, scores, mask, old, beta, eps, eps_high) -> float:
    terms = []
    for b in range(scores.shape[0]):
        idx = [k for k in range(scores.shape[1]) if mask[b, k]]
        shaped = {k: float(scores[b, k]) - beta * (float(old[b, k]) - float(ref[b, k])) for k in idx}
        for i in idx:
            others = [shaped[j] for j in idx if j != i]
            adv = shaped[i] - sum(others) / len(others) if others else 0.0
            ratio = math.exp(float(policy[b, i]) - float(old[b, i]))
            terms.append(-_clip_term(ratio, adv, eps, eps_high))
    return sum(terms) / len(terms)


def grpo_loop(policy, ref, scores, mask, lengths, old, beta, eps, bias_correction) -> float:
    terms = []
    for b in range(scores.shape[0]):
        idx = [k for k in range(scores.shape[1]) if mask[b, k]]
        r = [float(scores[b, k]) for k in idx]
        mean = sum(r) / len(r)
        std = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1)) if len(r) > 1 else float("nan")
        for i, k in enumerate(idx):
            adv = (r[i] - mean) / (std + 1e-4) if len(r) > 1 else 0.0
            n = float(lengths[b, k])
            ratio = math.exp((float(policy[b, k]) - float(old[b, k])) / n)
            delta = (float(ref[b, k]) - float(policy[b, k])) / n
            kl = math.exp(delta) - delta - 1
            terms.append(-_clip_term(ratio, adv, eps, eps) + beta * (ratio if bias_correction else 1.0) * kl)
    return sum(terms) / len(terms)


def p3o_loop(policy, ref, scores, mask, old, beta, eps, clip) -> float:
    pair_losses = []
    for b in range(scores.shape[0]):
        idx = [k for k in range(scores.shape[1]) if mask[b, k]]
        for a in range(len(idx)):
            for c in range(a + 1, len(idx)):
                i, j = idx[a], idx[c]
                r_i = float(scores[b, i]) - beta * (float(old[b, i]) - float(ref[b, i]))
                r_j = float(scores[b, j]) - beta * (float(old[b, j]) - float(ref[b, j]))
                rho_i = math.exp(float(policy[b, i]) - float(old[b, i]))
                rho_j = math.exp(float(policy[b, j]) - float(old[b, j]))
                d = r_i - r_j
                if clip == "separate":
                    t_ij, t_ji = _clip_term(rho_i, d, eps, eps), _clip_term(rho_j, -d, eps, eps)
                else:
                    t_ij, t_ji = _clip_term(rho_i / rho_j, d, eps, eps), _clip_term(rho_j / rho_i, -d, eps, eps)
                pair_losses.append(-0.5 * (t_ij + t_ji))
    return sum(pair_losses) / len(pair_losses)


@pytest.mark.parametrize("seed", [0, 1])
def test_rloo_equals_its_formula(seed):
    policy, ref, scores, mask, lengths, old = _random_batch(seed)
    for hp in ({"beta": 0.05, "epsilon": 0.2}, {"beta": 0.5, "epsilon": 0.1, "epsilon_high": 0.3}):
        out = get_objective("rloo", **hp)(policy, ref, scores, mask=mask, lengths=lengths, old_logps=old)
        hi = hp.get("epsilon_high", hp["epsilon"])
        expected = rloo_loop(policy, ref, scores, mask, old, hp["beta"], hp["epsilon"], hi)
        assert out.loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert 0 < out.metrics["clip_ratio/region"] < 1  # the batch exercises both branches of the clip


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_equals_its_formula(seed, bias_correction):
    policy, ref, scores, mask, lengths, old = _random_batch(seed)
    objective = get_objective("grpo", beta=0.5, use_bias_correction_kl=bias_correction)
    out = objective(policy, ref, scores, mask=mask, lengths=lengths, old_logps=old)
    expected = grpo_loop(policy, ref, scores, mask, lengths, old, 0.5, 0.2, bias_correction)
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("clip", ["separate", "joint"])
@pytest.mark.parametrize("seed", [0, 1])
def test_p3o_equals_its_formula(seed, clip):
    policy, ref, scores, mask, lengths, old = _random_batch(seed)
    out = get_objective("p3o", clip=clip)(policy, ref, scores, mask=mask, lengths=lengths, old_logps=old)
    assert out.loss.item() == pytest.approx(p3o_loop(policy, ref, scores, mask, old, 0.05, 0.2, clip), abs=1e-6)


def _loss_and_grad(name: str, policy, *args, **hp):
    policy = policy.clone().requires_grad_(True)
    ref, scores, mask, lengths, old = args
    loss = get_objective(name, **hp)(policy, ref, scores, mask=mask, lengths=lengths, old_logps=old).loss
    (grad,) = torch.autograd.grad(loss, policy)
    return loss.detach(), grad


def test_p3o_separate_is_rloo_with_two_samples():
    """P3O-V1 on pairs = RLOO with K = 2, same β and ε: the constant between the two is 1 (both average the two
    per-sample clipped terms of a pair), for the loss and its gradient, with some ratios clipped."""
    policy, ref, scores, _, lengths, old = _random_batch(3, b=6, k=2, spread=0.5)
    scores, mask = scores.nan_to_num(0.0), torch.ones_like(scores, dtype=torch.bool)  # every sample there
    args = (ref, scores, mask, lengths, old)
    loss_p3o, grad_p3o = _loss_and_grad("p3o", policy, *args, clip="separate", beta=0.1, epsilon=0.2)
    loss_rloo, grad_rloo = _loss_and_grad("rloo", policy, *args, beta=0.1, epsilon=0.2)
    torch.testing.assert_close(loss_p3o, loss_rloo)
    torch.testing.assert_close(grad_p3o, grad_rloo)
    ratio = torch.exp(policy - old)
    assert ((ratio < 0.8) | (ratio > 1.2)).any()
    # joint clipping is another objective (twice V1's gradient at θ = θ_old, then clipped differently)
    _, grad_joint = _loss_and_grad("p3o", policy, *args, clip="joint", beta=0.1, epsilon=0.2)
    assert not torch.allclose(grad_joint, grad_p3o)


@pytest.mark.parametrize("clip", ["separate", "joint"])
def test_p3o_update_is_invariant_to_a_per_prompt_reward_shift(clip):
    policy, ref, scores, mask, lengths, old = _random_batch(4)
    shift = torch.tensor([[3.0], [-7.5], [100.0], [0.25]])  # any constant per prompt, added to all its rewards
    _, grad = _loss_and_grad("p3o", policy, ref, scores, mask, lengths, old, clip=clip)
    _, shifted = _loss_and_grad("p3o", policy, ref, scores + shift, mask, lengths, old, clip=clip)
    torch.testing.assert_close(grad, shifted)
    assert grad.abs().sum() > 0
    # A pointwise REINFORCE without a baseline, −mean ρ·r̃, is not invariant: the shift moves its update.
    p = policy.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(-(torch.exp(p - old) * scores)[mask].mean(), p)
    (g1,) = torch.autograd.grad(-(torch.exp(p - old) * (scores + shift))[mask].mean(), p)
    assert not torch.allclose(g0, g1)


def test_online_objectives_need_old_logps_and_valid_settings():
    policy, ref, scores, mask, lengths, _ = _random_batch(0)
    for name in ("rloo", "grpo", "p3o"):
        assert get_spec(name).inputs == ("old_logps",)
        with pytest.raises(ValueError, match="needs old_logps"):
            get_objective(name)(policy, ref, scores, mask=mask, lengths=lengths)
    with pytest.raises(PrefrunError, match=r"objective.clip='both' is not one of separate\|joint"):
        get_objective("p3o", clip="both")
    with pytest.raises(PrefrunError, match="objective.scale_rewards='std' is not one of group"):
        get_objective("grpo", scale_rewards="std")
    with pytest.raises(PrefrunError, match="objective.epsilon=1.5 is out of range for rloo"):
        get_objective("rloo", epsilon=1.5)


# --- parity with TRL's trainers -----------------------------------------------------------------------

PROMPT_LEN = 3  # one length for every prompt: TRL left-pads prompts without position ids, prefrun right-pads


def _samples(vocab: int, b: int, k: int, max_len: int, seed: int):
    """B prompts of PROMPT_LEN tokens, K completions each (lengths 1..max_len), rewards; TRL's row order."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(260, vocab, (PROMPT_LEN,), generator=g).tolist() for _ in range(b)]
    lengths = torch.randint(1, max_len + 1, (b * k,), generator=g).tolist()
    completions = [torch.randint(260, vocab, (n,), generator=g).tolist() for n in lengths]
    rewards = torch.randn(b * k, generator=g).tolist()
    return prompts, completions, rewards


def _perturb(model, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _trl_batch(trainer, prompts, completions, rewards, k: int, tokenizer, generate_returns):
    """TRL's _generate_and_score_completions on fixed samples (its generation stubbed, nothing else)."""
    rows = [{"prompt": f"p{b}"} for b in range(len(prompts)) for _ in range(k)]
    prompt_rows = [prompts[b] for b in range(len(prompts)) for _ in range(k)]
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    trainer._generate = lambda _prompts: generate_returns(prompt_rows, completions, texts)
    trainer.reward_funcs = [lambda prompts, completions, **kw: rewards]
    trainer.reward_func_names = ["fixed"]
    return trainer._generate_and_score_completions(rows)


def _prefrun_logps(model, prompts, completions, k: int, pad: int):
    """Summed log-probs [B, K] and token counts [B, K] of the same samples, through prefrun.lm."""
    records = [
        {"prompt_ids": prompts[b], "response_ids": completions[b * k : (b + 1) * k], "scores": [0.0] * k}
        for b in range(len(prompts))
    ]
    batch = ListCollator(pad)(records)
    logps, lengths = response_logps(model, batch)
    return logps.view(len(prompts), k), lengths.view(len(prompts), k).float()


def _grads(model) -> list[torch.Tensor]:
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return grads


def _trainer(cls, config_cls, model_dir, out_dir, k: int, b: int, **settings):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = config_cls(
        output_dir=str(out_dir),
        per_device_train_batch_size=b * k,
        num_generations=k,
        max_completion_length=8,
        temperature=1.0,  # TRL divides the logits by it; prefrun's log-probs are at T = 1
        use_cpu=True,
        bf16=False,
        report_to=[],
        seed=0,
        **settings,
    )
    dataset = Dataset.from_dict({"prompt": ["p"] * (b * k)})
    trainer = cls(
        model=str(model_dir),
        reward_funcs=lambda **kw: [0.0],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.model.train()
    return trainer, tokenizer


RLOO = {"beta": 0.05, "epsilon": 0.2}
GRPO = {"beta": 0.04, "epsilon": 0.2, "importance_sampling_level": "sequence", "loss_type": "grpo"}


@pytest.fixture(scope="module")
def rloo_trainer(micro_model_dir, tmp_path_factory):
    """One RLOOTrainer (built with K = 4, 12 completions per batch) for both K: a batch of 6 prompts × 2 samples
    is 12 rows too, and ``num_generations`` is only read to group the rewards."""
    from trl import RLOOConfig, RLOOTrainer

    return _trainer(RLOOTrainer, RLOOConfig, micro_model_dir, tmp_path_factory.mktemp("rloo"), 4, 3, **RLOO)


@pytest.fixture(scope="module")
def grpo_trainer(micro_model_dir, tmp_path_factory):
    from trl import GRPOConfig, GRPOTrainer

    out = tmp_path_factory.mktemp("grpo")
    # num_iterations=2: samples are reused, so TRL computes the old log-probs instead of taking the ratio as 1
    trainer, tok = _trainer(GRPOTrainer, GRPOConfig, micro_model_dir, out, 4, 2, num_iterations=2, **GRPO)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; GRPO divides its loss by it
    return trainer, tok


def _compare(trainer, inputs, objective_loss, prompts, completions, k, tok, old, ref, rewards):
    """TRL's loss and gradient vs prefrun's objective on the model's summed log-probs, same weights."""
    model = trainer.model
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = _grads(model)
    policy, lengths = _prefrun_logps(model, prompts, completions, k, tok.pad_token_id)
    scores = torch.tensor(rewards).view(len(prompts), k)
    ours = objective_loss(policy, ref, scores, torch.ones_like(scores, dtype=torch.bool), lengths, old)
    ours.backward()
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(trl_loss.item()) > 1e-3
    for mine, theirs in zip(_grads(model), trl_grads, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("k", [2, 4])
def test_rloo_equals_trl_rloo_trainer(k, rloo_trainer):
    trainer, tok = rloo_trainer
    trainer.num_generations = k
    b, model = 12 // k, trainer.model
    _perturb(model, seed=1, scale=0.05)  # policy ≠ reference (which TRL reloaded from the directory)
    prompts, completions, rewards = _samples(len(tok), b, k, max_len=5, seed=k)
    inputs = _trl_batch(trainer, prompts, completions, rewards, k, tok, lambda p, c, t: (p, c, t))
    with torch.no_grad():
        old, _ = _prefrun_logps(model, prompts, completions, k, tok.pad_token_id)
        ref, _ = _prefrun_logps(trainer.ref_model, prompts, completions, k, tok.pad_token_id)
    torch.testing.assert_close(inputs["old_logps"].view(b, k), old, atol=1e-5, rtol=1e-5)
    assert (old - ref).abs().max() > 1e-2  # the KL in the reward is not zero
    _perturb(model, seed=2, scale=0.05)  # the policy moves after sampling: ratios ≠ 1, some clipped
    objective = get_objective("rloo", **RLOO)

    def loss(policy, ref, scores, mask, lengths, old):
        return objective(policy, ref, scores, mask=mask, lengths=lengths, old_logps=old).loss

    _compare(trainer, inputs, loss, prompts, completions, k, tok, old, ref, rewards)


def _grpo_generate(prompt_rows, completions, texts):
    return prompt_rows, completions, None, texts, None, {}, None, None


@pytest.mark.parametrize("case", ["beta0", "one_token_kl"])
def test_grpo_equals_trl_grpo_trainer_with_sequence_level_ratios(case, grpo_trainer):
    """``beta0``: TRL's default β = 0 (the trainer's β set to 0) on multi-token completions, prefrun's function
    called with β = 0, which the YAML path refuses; ``one_token_kl``: β = 0.04 on one-token completions, where
    TRL's per-token k3 KL is the sequence-level one (with TRL's default ``use_bias_correction_kl=True``: the KL
    weighted by the ratio)."""
    trainer, tok = grpo_trainer
    b, k, model = 2, 4, trainer.model
    beta = trainer.beta = 0.0 if case == "beta0" else GRPO["beta"]
    _perturb(model, seed=1, scale=0.05)
    prompts, completions, rewards = _samples(len(tok), b, k, max_len=1 if beta else 5, seed=7)
    inputs = _trl_batch(trainer, prompts, completions, rewards, k, tok, _grpo_generate)
    with torch.no_grad():
        old, _ = _prefrun_logps(model, prompts, completions, k, tok.pad_token_id)
        ref, _ = _prefrun_logps(trainer.ref_model, prompts, completions, k, tok.pad_token_id)
    _perturb(model, seed=2, scale=0.2)
    hp = {"beta": beta, "epsilon": 0.2, "epsilon_high": None, "scale_rewards": "group", "use_bias_correction_kl": True}

    def loss(policy, ref, scores, mask, lengths, old):
        return get_spec("grpo").fn(policy, ref, scores, mask, lengths, old, **hp).loss

    _compare(trainer, inputs, loss, prompts, completions, k, tok, old, ref, rewards)
