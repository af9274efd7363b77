"""``eval=reward``: sample policy and reference on held-out prompts, score both with the run's reward source.

    reward        mean r(x, y) of each model's samples (the source chosen by ``reward=``: oracle,
                  reward_model, judge (single protocol), python, ...)
    win rate      mean over comparisons of [r(y_π) > r(y_ref)] + ½ [r(y_π) = r(y_ref)], the k-th policy
                  sample against the k-th reference sample of the same prompt; a 95% percentile
                  bootstrap interval over prompts
    KL            mean of log π(y) − log π_ref(y) over the policy's samples (prefrun.evaluation.sampling)

A score the source could not compute (NaN) is counted and left out of every figure; more than 1% NaN
logs a warning. Settings (conf/eval/reward.yaml): prompts, samples (per prompt and model), seed,
bootstrap (resamples); the other sampling settings come from the ``generation`` block.
"""

from __future__ import annotations

from typing import Any

import torch

from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.base import EvalInputs, Evaluation, Row
from prefrun.evaluation.sampling import kl_estimate, reference_model, sample_both, settings_for
from prefrun.evaluation.stats import bootstrap_interval, count_nan, nanmean, outcomes


def reward_comparison(policy: torch.Tensor, reference: torch.Tensor, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Figures of [B, K] policy and reference scores (NaN = unscored): means, win rate and its interval.

    The interval resamples prompts: each prompt's outcome is the mean over its K comparisons with both
    scores finite (prompts with none are left out).
    """
    policy, reference = policy.double(), reference.double()
    y = outcomes(policy, reference).reshape(policy.shape)
    finite = ~y.isnan()
    per_prompt = torch.where(finite, y, torch.zeros_like(y)).sum(1) / finite.sum(1)
    low, high = bootstrap_interval(per_prompt, n_boot=n_boot, seed=seed)
    return {
        "policy_reward": nanmean(policy),
        "reference_reward": nanmean(reference),
        "reward_gain": nanmean(policy) - nanmean(reference),
        "win_rate": nanmean(y),
        "win_rate_low": low,
        "win_rate_high": high,
        "comparisons": int(finite.sum()),
        "nan_policy": int(policy.isnan().sum()),
        "nan_reference": int(reference.isnan().sum()),
    }


@EVALUATORS.register("reward")
def evaluate(inputs: EvalInputs, settings: Any) -> Evaluation:
    """Reward of policy and reference samples, win rate with its interval, KL."""
    prompts = list(inputs.data.eval_prompts[: int(settings.get("prompts", 256))])
    seed = int(settings.get("seed", 1234))
    sampling = settings_for(inputs, n=int(settings.get("samples", 1)), seed=seed)
    ref_samples, pol_samples = sample_both(inputs, prompts, sampling, "reward")
    source = inputs.reward()
    policy = source.score(prompts, pol_samples.texts)
    reference = source.score(prompts, ref_samples.texts)
    count_nan(policy, f"eval=reward: reward source {source.name!r} on policy samples")
    count_nan(reference, f"eval=reward: reward source {source.name!r} on reference samples")
    metrics = reward_comparison(policy, reference, n_boot=int(settings.get("bootstrap", 2000)), seed=seed)
    metrics["source"] = source.name
    metrics["samples"] = int(policy.numel())
    metrics["kl"] = kl_estimate(inputs.policy, reference_model(inputs, "reward"), pol_samples, sampling.batch_size)
    metrics["truncated_policy"], metrics["truncated_reference"] = pol_samples.truncated, ref_samples.truncated
    rows = [
        Row(f"reward ({source.name})"[:22], f"{metrics['reference_reward']:.3f}", f"{metrics['policy_reward']:.3f}"),
        Row("reward win rate", "", f"{metrics['win_rate']:.3f}"),
        Row("  95% interval", "", f"{metrics['win_rate_low']:.2f}-{metrics['win_rate_high']:.2f}"),
        Row("reward-samples KL", "", f"{metrics['kl']:.3f}"),
    ]
    nan = metrics["nan_policy"] + metrics["nan_reference"]
    if nan:
        rows.append(Row("unscored (NaN)", str(metrics["nan_reference"]), str(metrics["nan_policy"])))
    return Evaluation(metrics=metrics, rows=rows)
