"""``eval=judge``: pairwise win rate of the policy against the reference by the run's reward source's prefer.

For each held-out prompt x, one policy sample y_π and one reference sample y_ref (same seed), and

    y_x = P(y_π ≻ y_ref | x) = prefer(x, [y_π, y_ref])[0, 1]        (½ for a tie or an unparsed verdict)
    win rate = mean_x y_x,  with a 95% percentile bootstrap interval over prompts (seeded)

The position-swap protocol (fixed | random | both, ``reward.swap``) belongs to the source: a judge shows
the pair in the orders it chooses and maps its verdicts back; the oracle's preference is exact. The
source's consistency (both orders agree), unparsed rate and first-position rate are reported from its
``stats()`` (its counters so far, this evaluation's calls included). Under a first-position bias, ``fixed``
reports the bias, not the policy; ``random`` and ``both`` remove it but pull a real gap toward ½ (a
simulated judge with b = 1: true 0.602, fixed 0.779, random 0.588, both 0.589).

The length-controlled win rate (Dubois et al. 2024, arXiv 2404.04475) is the win rate the same judge would
give at equal answer lengths (prefrun.evaluation.stats.length_controlled_win_rate), Δlen = len(y_ref) −
len(y_π) in characters.

Settings (conf/eval/judge.yaml): prompts, seed, bootstrap; other sampling settings from ``generation``.
"""

from __future__ import annotations

from typing import Any

import torch

from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.base import EvalInputs, Evaluation, Row
from prefrun.evaluation.sampling import sample_both, settings_for
from prefrun.evaluation.stats import bootstrap_interval, count_nan, length_controlled_win_rate, nanmean

REPORTED_STATS = ("consistency", "unparsed_rate", "first_position_rate")


def judged_win_rate(
    source: Any, prompts: list[Any], policy_texts: list[str], reference_texts: list[str], *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Win rate, interval and length-controlled win rate of ``policy_texts`` over ``reference_texts``."""
    prefs = source.prefer(prompts, [[p, r] for p, r in zip(policy_texts, reference_texts)])
    y = prefs[:, 0, 1].double()
    nan = count_nan(y, f"eval=judge: reward source {getattr(source, 'name', '?')!r}")
    delta_len = torch.tensor([len(r) - len(p) for p, r in zip(policy_texts, reference_texts)], dtype=torch.float64)
    low, high = bootstrap_interval(y, n_boot=n_boot, seed=seed)
    metrics: dict[str, Any] = {
        "win_rate": nanmean(y),
        "win_rate_low": low,
        "win_rate_high": high,
        "lc_win_rate": length_controlled_win_rate(y, delta_len),
        "pairs": int((~y.isnan()).sum()),
        "nan": nan,
        "policy_chars": nanmean([len(t) for t in policy_texts]),
        "reference_chars": nanmean([len(t) for t in reference_texts]),
    }
    stats = source.stats() if hasattr(source, "stats") else {}
    metrics.update({key: float(stats[key]) for key in REPORTED_STATS if key in stats})
    return metrics


@EVALUATORS.register("judge")
def evaluate(inputs: EvalInputs, settings: Any) -> Evaluation:
    """Judged win rate of policy over reference, its interval, LC win rate, the judge's consistency."""
    prompts = list(inputs.data.eval_prompts[: int(settings.get("prompts", 256))])
    seed = int(settings.get("seed", 1234))
    ref_samples, pol_samples = sample_both(inputs, prompts, settings_for(inputs, n=1, seed=seed), "judge")
    source = inputs.reward()
    metrics = judged_win_rate(
        source,
        prompts,
        [row[0] for row in pol_samples.texts],
        [row[0] for row in ref_samples.texts],
        n_boot=int(settings.get("bootstrap", 2000)),
        seed=seed,
    )
    metrics["source"] = getattr(source, "name", "")
    rows = [
        Row("judge win rate", "", f"{metrics['win_rate']:.3f}"),
        Row("  95% interval", "", f"{metrics['win_rate_low']:.2f}-{metrics['win_rate_high']:.2f}"),
        Row("  length-controlled", "", f"{metrics['lc_win_rate']:.3f}"),
        Row("answer length (chars)", f"{metrics['reference_chars']:.1f}", f"{metrics['policy_chars']:.1f}"),
    ]
    for key in ("consistency", "unparsed_rate"):
        if key in metrics:
            rows.append(Row(f"  judge {key.replace('_', ' ')}", "", f"{metrics[key]:.3f}"))
    if metrics["nan"]:
        rows.append(Row("  unjudged (NaN)", "", str(metrics["nan"])))
    return Evaluation(metrics=metrics, rows=rows)
