"""``eval=oracle``: sample policy and reference on held-out prompts, score with the synthetic task's oracle.

Samples one response per prompt at temperature 1 with top-k and top-p off (greedy saturates on the sort
task), the same seed for both models. Reports, for each model, the mean oracle reward, the strict metrics
(sort: exact sort rate, valid permutation rate) and the mean response length in tokens (EOS included);
the win rate of policy over reference on the same prompt (ties count ½); and the sequence
KL(policy ‖ reference) estimated from the policy's own samples, mean of log π(y) − log π_ref(y).

Settings (conf/eval/oracle.yaml): prompts, max_new_tokens, batch_size (prompts per generate call), seed.

Under a decoder (``task=evaluate ... decode=bon``: the task puts the ``decode`` block into these settings) the
policy's answers are the decoder's (prefrun.decoding) and the reference's stay plain samples, so the win rate
is the decoded policy against the sampled reference; the decoder's report (cost per response, its KL bound
and plug-in estimate from the policy it wraps) is added under ``decode/``. ``kl`` stays the mean
log π(y) − log π_ref(y) over the answers, which for a decoder is not the decoded policy's KL.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.base import EvalInputs, Evaluation, Row
from prefrun.evaluation.sampling import kl_estimate, reference_model, sample_both, sample_decoded, settings_for
from prefrun.evaluation.stats import win_rate

STRICT_LABELS = {"exact_sort": "exact sort rate", "valid_permutation": "valid permutation"}


@EVALUATORS.register("oracle")
def evaluate(inputs: EvalInputs, settings: Any) -> Evaluation:
    """Oracle reward, strict metrics and length of each model; win rate and KL of policy vs reference."""
    data = inputs.data
    if data.reward_fn is None:
        note = "dataset has no oracle; eval=oracle reports nothing (use eval=[preference] on held-out pairs)"
        return Evaluation(metrics={"note": note}, rows=[Row(note)])
    prompts = list(data.eval_prompts[: settings.get("prompts", 256)])
    sampling = settings_for(
        inputs,
        n=1,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        stop=(),
        max_new_tokens=int(settings.get("max_new_tokens", 24)),
        batch_size=int(settings.get("batch_size", 256)),
        seed=int(settings.get("seed", 1234)),
    )
    decode, report = settings.get("decode"), {}
    if decode is None:
        drawn_both = sample_both(inputs, prompts, sampling, "oracle")
    else:
        *drawn_both, report = sample_decoded(inputs, prompts, sampling, "oracle", decode)
    samples = dict(zip(("reference", "policy"), drawn_both))
    results: dict[str, Any] = {}
    rewards: dict[str, list[float]] = {}
    for name, drawn in samples.items():
        texts = [row[0] for row in drawn.texts]
        rewards[name] = [data.reward_fn(p, t) for p, t in zip(prompts, texts)]
        results[f"{name}/oracle_reward"] = fmean(rewards[name])
        for metric, fn in data.strict_fns.items():
            results[f"{name}/{metric}"] = fmean(float(fn(p, t)) for p, t in zip(prompts, texts))
        results[f"{name}/length"] = fmean(len(row[0]) for row in drawn.token_ids)
        if name == "policy":
            reference = reference_model(inputs, "oracle")
            results["kl"] = kl_estimate(inputs.policy, reference, drawn, batch_size=sampling.batch_size)
    results["win_rate"] = win_rate(rewards["policy"], rewards["reference"])
    results["reward_gain"] = results["policy/oracle_reward"] - results["reference/oracle_reward"]
    rows = _rows(results, list(data.strict_fns))
    if decode is not None:
        results.update({f"decode/{key}": value for key, value in report.items()})
        rows.append(Row(f"decode={decode.name}"[:22], "", "policy"))
        rows.append(Row("  tokens fwd / answer", "", f"{report['forward_tokens']:.1f}"))
        if "kl_bound" in report:
            rows.append(Row("  KL bound (vs policy)", "", f"{report['kl_bound']:.3f}"))
    return Evaluation(metrics=results, rows=rows)


def _rows(results: dict[str, float], strict: list[str]) -> list[Row]:
    rows = [_pair("oracle reward", results, "oracle_reward", ".3f")]
    rows += [_pair(STRICT_LABELS.get(m, m.replace("_", " ")), results, m, ".3f") for m in strict]
    rows.append(_pair("response length", results, "length", ".2f"))
    rows.append(Row("win rate vs reference", "", f"{results['win_rate']:.3f}"))
    rows.append(Row("KL(policy || ref)", "", f"{results['kl']:.3f}"))
    return rows


def _pair(label: str, results: dict[str, float], key: str, fmt: str) -> Row:
    return Row(label, format(results[f"reference/{key}"], fmt), format(results[f"policy/{key}"], fmt))
