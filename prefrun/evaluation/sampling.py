"""Policy and reference samples on the same held-out prompts, and the KL estimate from the policy's samples.

Both models are sampled with the same settings and seed (the sampler restores the caller's RNG), so a
comparison on prompt b sets the policy's k-th sample against the reference's k-th.

    KL(π ‖ π_ref) ≈ mean over policy samples y ~ π(· | x) of  log π(y | x) − log π_ref(y | x)

an unbiased estimate of the sequence-level KL when the samples are drawn at temperature 1 (Schulman's
"k1" estimator); both log-probs come from the one log-prob routine (prefrun.lm.logprobs.score_rows).

``sample_decoded`` is ``sample_both`` with the policy's answers drawn by a decoder (``decode=bon``, ...;
prefrun.decoding): the reference's stay plain samples, so a comparison is the decoded policy against the
reference as sampled. Its reward source is ``decode.reward``, else the run's (``inputs.reward``).
"""

from __future__ import annotations

import dataclasses
from statistics import fmean
from typing import Any

from prefrun.errors import PrefrunError
from prefrun.evaluation.base import EvalInputs


def settings_for(inputs: EvalInputs, **overrides: Any) -> Any:
    """The run's sampling settings (the ``generation`` block) with an evaluator's ``overrides``."""
    from prefrun.generation import SamplingSettings

    base = inputs.generation if inputs.generation is not None else SamplingSettings()
    return dataclasses.replace(base, **overrides)


def reference_model(inputs: EvalInputs, evaluator: str) -> Any:
    reference = inputs.reference() if inputs.reference is not None else None
    if reference is None:
        raise PrefrunError(f"eval={evaluator} compares the policy with its reference, and this run has none")
    return reference


def sample_both(inputs: EvalInputs, prompts: list[Any], settings: Any, evaluator: str) -> tuple[Any, Any]:
    """(reference samples, policy samples) of ``prompts``: prefrun.generation.Samples, K = settings.n each."""
    from prefrun.generation import encode_prompts, sample

    if not prompts:
        raise PrefrunError(f"eval={evaluator}: the dataset has no held-out prompts to sample")
    reference = reference_model(inputs, evaluator)
    prompt_ids = encode_prompts(inputs.tokenizer, prompts, inputs.max_prompt_len)
    ref = sample(reference, inputs.tokenizer, prompt_ids, settings, stage=f"eval {evaluator}: reference samples")
    pol = sample(inputs.policy, inputs.tokenizer, prompt_ids, settings, stage=f"eval {evaluator}: policy samples")
    return ref, pol


def kl_estimate(policy: Any, reference: Any, samples: Any, batch_size: int = 64) -> float:
    """Mean of log π(y) − log π_ref(y) over every sample y of ``samples`` (drawn from the policy)."""
    from prefrun.lm.logprobs import score_rows

    rows = [{"prompt_ids": p, "response_ids": ids} for p, ids in zip(samples.prompt_ids, samples.token_ids)]
    logp_pi, _ = score_rows(policy, rows, batch_size=batch_size, stage="KL: policy log-probs")
    logp_ref, _ = score_rows(reference, rows, batch_size=batch_size, stage="KL: reference log-probs")
    return fmean(a - b for row_pi, row_ref in zip(logp_pi, logp_ref) for a, b in zip(row_pi, row_ref))


def decoder_for(inputs: EvalInputs, decode_cfg: Any) -> Any:
    """The decoder ``decode_cfg`` names, its reward source ``decode.reward`` or else the run's."""
    from prefrun.decoding import build_decoder

    def reward() -> Any:
        own = decode_cfg.get("reward")
        if own is None:
            source = inputs.reward() if inputs.reward is not None else None
        else:
            from prefrun.rewards import RewardContext, build_reward

            data = inputs.data
            context = RewardContext(
                oracle=data.reward_fn,
                device=inputs.device,
                cache_dir=str(decode_cfg.get("cache_dir") or "outputs/.cache"),
                words=list(getattr(data, "words", None) or []),
                seed=inputs.seed,
            )
            source = build_reward(own, context)
        if source is None:
            raise PrefrunError(
                f"decode={decode_cfg.name} needs a reward source and the run has none: set reward=<name>"
            )
        return source

    return build_decoder(decode_cfg, reward)


def sample_decoded(
    inputs: EvalInputs, prompts: list[Any], settings: Any, evaluator: str, decode_cfg: Any
) -> tuple[Any, Any, dict[str, float]]:
    """(reference samples, the policy's decoded answers, the decoder's report); K = 1 each."""
    from prefrun.generation import encode_prompts, sample

    if not prompts:
        raise PrefrunError(f"eval={evaluator}: the dataset has no held-out prompts to sample")
    decoder = decoder_for(inputs, decode_cfg)
    reference = reference_model(inputs, evaluator)
    prompt_ids = encode_prompts(inputs.tokenizer, prompts, inputs.max_prompt_len)
    ref = sample(reference, inputs.tokenizer, prompt_ids, settings, stage=f"eval {evaluator}: reference samples")
    decoded = decoder.decode(inputs.policy, inputs.tokenizer, prompts, prompt_ids, settings)
    return ref, decoded.samples, decoded.report
