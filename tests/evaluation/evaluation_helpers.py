"""Evaluation fixtures: a micro policy (the micro model, perturbed) and reference, and EvalInputs around them."""

from __future__ import annotations

import copy

import torch

from prefrun.data import synthetic
from prefrun.data.sources import RunData
from prefrun.evaluation.base import EvalInputs


def perturbed(model, scale: float = 0.05, seed: int = 0):
    """A copy of ``model`` with seeded Gaussian noise on every weight: a policy that differs from its reference."""
    out = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return out.eval()


def policy_reference(micro_model):
    """(policy, reference, tokenizer) from the ``micro_model`` fixture: it is the reference, a perturbed copy
    the policy."""
    reference, tokenizer = micro_model
    return perturbed(reference), reference.eval(), tokenizer


def sort_data(n_prompts: int = 24, **extra) -> RunData:
    task = synthetic.SortTask()
    return RunData(
        train=[],
        eval_prompts=synthetic.eval_prompts(task, n_prompts, seed=5),
        reward_fn=synthetic.oracle_reward,
        strict_fns={"exact_sort": synthetic.is_sorted_exactly, "valid_permutation": synthetic.is_valid_permutation},
        **extra,
    )


def make_inputs(policy, reference, tokenizer, data, *, objective=None, reward=None, generation=None) -> EvalInputs:
    from prefrun.generation import SamplingSettings

    return EvalInputs(
        policy=policy,
        tokenizer=tokenizer,
        reference=lambda: reference,
        data=data,
        objective=objective,
        reward=lambda: reward,
        generation=generation or SamplingSettings(max_new_tokens=12, batch_size=8),
        device="cpu",
        seed=0,
        max_prompt_len=64,
        max_response_len=32,
    )
