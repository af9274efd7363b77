"""The diffusion objectives against loops written from their formulas, the diffusers example's DPO loss, and the
sign of one step: every preference objective lowers ℓ_w − ℓ_l (the diffusers ORPO example's bug raises it)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from prefrun.objectives import get_objective, get_spec


def _errors(seed: int, b: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoising errors ℓ [B, 2] of a policy and a reference (winner first), around the tiny UNet's scale."""
    g = torch.Generator().manual_seed(seed)
    policy = 0.05 + 0.1 * torch.rand(b, 2, generator=g)
    return policy, policy + 0.01 * torch.randn(b, 2, generator=g)


SCORES = torch.tensor([[1.0, 0.0]]).expand(6, 2)


def test_the_objectives_register_as_diffusion_objectives_of_pairs():
    for name, needs_ref in (("diffusion_dpo", True), ("mapo", False), ("diffusion_sft", False)):
        spec = get_spec(name)
        assert (spec.trains, spec.data, spec.needs_reference) == ("diffusion", "pairwise", needs_ref)
    assert get_spec("diffusion_dpo").defaults == {"beta": 5000.0}
    assert get_spec("mapo").defaults == {"beta": 0.1, "snr_value": 0.5, "num_train_timesteps": 1000}


def test_diffusion_dpo_is_log_2_at_the_reference_with_ties_counted_half():
    err, _ = _errors(0)
    out = get_objective("diffusion_dpo")(-err, -err, SCORES)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert out.metrics["implicit_acc"] == 0.5  # the official strict > would say 0


def test_diffusion_dpo_matches_a_loop_over_pairs_and_the_winner_is_the_higher_score():
    err, ref = _errors(1)
    beta = 5000.0
    expected = 0.0
    for (lw, ll), (rw, rl) in zip(err.tolist(), ref.tolist()):
        inside = -0.5 * beta * ((lw - ll) - (rw - rl))
        expected += -math.log(1 / (1 + math.exp(-inside)))
    expected /= len(err)
    objective = get_objective("diffusion_dpo", beta=beta)
    assert objective(-err, -ref, SCORES).loss.item() == pytest.approx(expected, rel=1e-6)
    swapped = objective(-err.flip(1), -ref.flip(1), torch.tensor([[0.0, 1.0]]).expand(6, 2))
    assert swapped.loss.item() == pytest.approx(expected, rel=1e-6)  # the scores pick the winner, not the column


def test_mapo_matches_a_loop_from_its_formula():
    err, _ = _errors(2)
    beta, s, big_t = 0.1, 0.5, 1000

    def f(x):
        return s * x / (math.exp(s * x) - 1)

    margin = [math.log(1 / (1 + math.exp(-big_t * (f(lw) - f(ll))))) for lw, ll in err.tolist()]
    expected = sum(lw for lw, _ in err.tolist()) / len(err) - beta * sum(margin) / len(margin)
    out = get_objective("mapo")(-err, None, SCORES)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_mapo_f_is_bounded_decreasing_and_finite_at_zero():
    from prefrun.objectives.diffusion import mapo_f

    values = mapo_f(torch.tensor([0.0, 1e-9, 0.1, 1.0, 10.0]), 0.5)
    assert torch.isfinite(values).all() and values[0].item() == pytest.approx(1.0, abs=1e-6)
    assert (values[1:] < values[:-1] + 1e-7).all() and (values > 0).all()


def test_diffusion_sft_is_the_winners_mean_error():
    err, _ = _errors(3)
    assert get_objective("diffusion_sft")(-err, None, SCORES).loss.item() == pytest.approx(err[:, 0].mean().item())


def _trainer(unet, scheduler, objective, tmp_path, reference=None):
    from transformers import TrainingArguments

    from prefrun.diffusion.trainer import DiffusionTrainer, PairDataset

    x = torch.zeros(2, 1, 8, 8)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True)
    return DiffusionTrainer(
        model=unet,
        args=args,
        train_dataset=PairDataset(x, x, None),
        objective=objective,
        noise_scheduler=scheduler,
        reference=reference,
    )


def _batch(seed: int, b: int = 4):
    g = torch.Generator().manual_seed(seed)
    return {
        "x_w": torch.rand(b, 1, 8, 8, generator=g) * 2 - 1,
        "x_l": torch.rand(b, 1, 8, 8, generator=g) * 2 - 1,
        "classes": torch.tensor([0, 1, 0, 1][:b]),
    }


def test_winner_and_loser_share_the_timestep_and_the_noise(unet_and_scheduler, tmp_path, monkeypatch):
    unet, scheduler = unet_and_scheduler
    seen = []
    original = scheduler.add_noise

    def spy(x0, noise, t):
        seen.append((noise.clone(), t.clone()))
        return original(x0, noise, t)

    monkeypatch.setattr(scheduler, "add_noise", spy)
    trainer = _trainer(unet, scheduler, get_objective("diffusion_dpo"), tmp_path, reference=copy.deepcopy(unet))
    trainer.compute_loss(unet, _batch(0))
    assert len(seen) == 2  # the policy's forward and the reference's, on the same draws
    for noise, t in seen:
        assert torch.equal(noise[:4], noise[4:]) and torch.equal(t[:4], t[4:])
    assert torch.equal(seen[0][0], seen[1][0]) and torch.equal(seen[0][1], seen[1][1])


def test_diffusion_dpo_equals_the_diffusers_example_loss_with_its_beta_of_2500(
    unet_and_scheduler, tmp_path, monkeypatch
):
    """The loss as ``train_diffusion_dpo.py`` computes it (LoRA policy, reference = adapters disabled,
    ``−logsigmoid(β'·(ref_diff − model_diff))``, β' = 2500), against prefrun's with the official β = 5000."""
    from prefrun.diffusion import trainer as trainer_module
    from prefrun.diffusion.models import add_lora, set_adapters

    base, scheduler = unet_and_scheduler
    unet = add_lora(copy.deepcopy(base), _lora())
    with torch.no_grad():  # a trained adapter: the policy differs from its reference
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    batch = _batch(1)
    g = torch.Generator().manual_seed(7)
    latents = torch.cat([batch["x_w"], batch["x_l"]])
    noise = torch.randn(latents.shape, generator=g).chunk(2)[0].repeat(2, 1, 1, 1)  # as the example draws them
    timesteps = torch.randint(0, 1000, (4,), generator=g).repeat(2)
    monkeypatch.setattr(trainer_module, "shared_noise", lambda x_w, steps: (noise, timesteps))

    ours = _trainer(unet, scheduler, get_objective("diffusion_dpo", beta=5000.0), tmp_path).compute_loss(unet, batch)

    labels = batch["classes"].repeat(2)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    model_pred = unet(noisy, timesteps, class_labels=labels).sample
    model_losses = F.mse_loss(model_pred.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3])
    model_losses_w, model_losses_l = model_losses.chunk(2)
    model_diff = model_losses_w - model_losses_l
    with torch.no_grad():
        set_adapters(unet, False)
        ref_preds = unet(noisy, timesteps, class_labels=labels).sample.detach()
        ref_loss = F.mse_loss(ref_preds.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3])
        ref_losses_w, ref_losses_l = ref_loss.chunk(2)
        ref_diff = ref_losses_w - ref_losses_l
        set_adapters(unet, True)
    logits = ref_diff - model_diff
    theirs = -1 * F.logsigmoid(2500.0 * logits).mean()
    assert abs(ours.item() - math.log(2)) > 1e-3  # not the trivial reference point
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def _lora():
    from omegaconf import OmegaConf

    return OmegaConf.create({"r": 4, "alpha": 4, "dropout": 0.0, "target_modules": ["conv1", "conv2"]})


def _one_step_change(unet, scheduler, loss_of, lr: float) -> tuple[float, float]:
    """(ℓ_w − ℓ_l before, after) one SGD step on one pair, with its noise and timestep fixed."""
    from prefrun.diffusion.trainer import pair_errors

    policy = copy.deepcopy(unet).train()
    reference = copy.deepcopy(unet).eval()
    batch = _batch(2, b=1)
    x_w, x_l, c = batch["x_w"], batch["x_l"], batch["classes"]
    noise = torch.randn(x_w.shape, generator=torch.Generator().manual_seed(3)).repeat(2, 1, 1, 1)
    t = torch.tensor([300, 300])

    def gap(model):
        err = pair_errors(model, scheduler, x_w, x_l, c, noise, t)
        return err, (err[:, 0] - err[:, 1]).item()

    err, before = gap(policy)
    with torch.no_grad():
        ref = pair_errors(reference, scheduler, x_w, x_l, c, noise, t)
    loss = loss_of(err, ref)
    loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    return before, gap(policy)[1]


@pytest.mark.parametrize("name", ["diffusion_dpo", "mapo"])
def test_one_step_of_every_preference_objective_lowers_the_winners_error_gap(unet_and_scheduler, name):
    unet, scheduler = unet_and_scheduler
    objective = get_objective(name)
    scores = torch.tensor([[1.0, 0.0]])
    before, after = _one_step_change(unet, scheduler, lambda e, r: objective(-e, -r, scores).loss, lr=1e-4)
    assert after < before


def test_the_sign_test_catches_the_diffusers_orpo_examples_preference_term(unet_and_scheduler):
    """``loss = ℓ_w.mean() − β·logsigmoid(ℓ_w − ℓ_l).mean()`` (wrong sign: log-likelihood ∝ −ℓ) raises the gap."""
    unet, scheduler = unet_and_scheduler

    def orpo_example(err, ref):
        return -1000.0 * F.logsigmoid(err[:, 0] - err[:, 1]).mean()  # its preference term, weighted to dominate

    before, after = _one_step_change(unet, scheduler, orpo_example, lr=1e-4)
    assert after > before


def test_one_step_of_the_sft_baseline_lowers_the_winners_error(unet_and_scheduler):
    from prefrun.diffusion.trainer import pair_errors

    unet, scheduler = unet_and_scheduler
    objective = get_objective("diffusion_sft")
    policy = copy.deepcopy(unet)
    batch = _batch(4, b=1)
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(5)).repeat(2, 1, 1, 1)
    t = torch.tensor([200, 200])
    err = pair_errors(policy, scheduler, batch["x_w"], batch["x_l"], batch["classes"], noise, t)
    objective(-err, None, torch.tensor([[1.0, 0.0]])).loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            p -= 1e-4 * p.grad
        after = pair_errors(policy, scheduler, batch["x_w"], batch["x_l"], batch["classes"], noise, t)
    assert after[0, 0] < err[0, 0]
