"""``eval=preference``: implicit-reward pairwise accuracy and margins on the held-out preference records.

Each held-out list becomes one pair, its best response (w) against its worst (l); lists whose scores are
all tied give none and are counted. The policy's reward of a response is the objective's own score:

    objectives with a reference:  r(y) = β · (log π(y | x) − log π_ref(y | x))        (DPO's implicit
                                  reward, Rafailov et al. 2023, arXiv 2305.18290 eq. 5; β from the
                                  objective's hyperparameters, 1 when it has none)
    reference-free objectives:    r(y) = log π(y | x) / |y|                           (SimPO's reward,
                                  Meng et al. 2024, arXiv 2405.14734 eq. 4, without its β; ORPO's
                                  log-odds log(p / (1 − p)) with p = exp(log π / |y|) are increasing in
                                  it, so they rank pairs the same way; CPO and SLiC are judged on it too)

    margin = r(y_w) − r(y_l);   accuracy = mean over pairs of [margin > 0] + ½ [margin = 0]

reported with the margin's mean and quartiles (the figures TRL's DPOTrainer logs as rewards/accuracies
and rewards/margins). The reference's own figures use its log-probs alone, β · log π_ref(y) (or
log π_ref(y) / |y| for reference-free objectives), so the table shows what training added.

Settings (conf/eval/preference.yaml): records (at most this many held-out records), batch_size.
"""

from __future__ import annotations

from typing import Any

import torch

from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.base import EvalInputs, Evaluation, Row
from prefrun.evaluation.stats import quartiles


def pair_rewards(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor | None,
    lengths: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """[N, 2] rewards of (chosen, rejected): β·(log π − log π_ref) given reference log-probs, else log π/|y|."""
    if reference_logps is None:
        return policy_logps.double() / lengths.double().clamp(min=1)
    return beta * (policy_logps.double() - reference_logps.double())


def pair_summary(rewards: torch.Tensor) -> dict[str, float]:
    """Accuracy (ties ½) and margin mean and quartiles of [N, 2] (chosen, rejected) rewards."""
    margins = rewards[:, 0] - rewards[:, 1]
    accuracy = float(((margins > 0).double() + 0.5 * (margins == 0).double()).mean())
    q25, q50, q75 = quartiles(margins)
    return {
        "accuracy": accuracy,
        "margin_mean": float(margins.mean()),
        "margin_q25": q25,
        "margin_median": q50,
        "margin_q75": q75,
    }


def uses_reference(inputs: EvalInputs) -> bool:
    """Whether the policy's score is the implicit reward against a reference (the objective says so)."""
    objective = inputs.objective
    if objective is not None:
        return bool(objective.needs_reference)
    return inputs.reference is not None and inputs.reference() is not None


def beta_of(objective: Any) -> float:
    hparams = getattr(objective, "hparams", None) or {}
    return float(hparams.get("beta", 1.0))


@EVALUATORS.register("preference")
def evaluate(inputs: EvalInputs, settings: Any) -> Evaluation:
    """Pairwise accuracy and margins of the policy's (and the reference's) rewards on held-out pairs."""
    from prefrun.data.pairs import to_pairs
    from prefrun.data.tokenize import tokenize_record
    from prefrun.lm.logprobs import score_rows

    records = inputs.data.eval_records
    limit = settings.get("records")
    records = records[: int(limit)] if limit else records
    pairs, ties = to_pairs(records, "best_worst")
    metrics: dict[str, Any] = {"records": len(records), "pairs": len(pairs), "ties_dropped": ties}
    metrics["held_out_from_train"] = int(getattr(inputs.data, "held_out", 0))
    if not pairs:
        note = f"preference: none of the {len(records)} held-out records holds an untied pair"
        return Evaluation(metrics={**metrics, "note": note}, rows=[Row(note)])
    joint = bool(getattr(getattr(inputs.objective, "spec", None), "joint", False))
    rows = [
        tokenize_record(r, inputs.tokenizer, inputs.max_prompt_len, inputs.max_response_len, joint=joint) for r in pairs
    ]
    batch_size = int(settings.get("batch_size", 16))
    policy_logps, counts = score_rows(
        inputs.policy, rows, batch_size=batch_size, score_prompt=joint, stage="eval preference: policy log-probs"
    )
    policy_logps, lengths = torch.tensor(policy_logps), torch.tensor(counts)
    beta = beta_of(inputs.objective)
    reference = inputs.reference() if inputs.reference is not None else None
    reference_logps = None
    if reference is not None:
        reference_logps = torch.tensor(
            score_rows(
                reference, rows, batch_size=batch_size, score_prompt=joint, stage="eval preference: reference log-probs"
            )[0]
        )
    if uses_reference(inputs) and reference_logps is not None:
        metrics["reward"] = "beta * (log pi - log pi_ref)"
        policy = pair_summary(pair_rewards(policy_logps, reference_logps, lengths, beta))
        own = pair_summary(beta * reference_logps.double())
    else:
        metrics["reward"] = "log pi / |y|"
        policy = pair_summary(pair_rewards(policy_logps, None, lengths, beta))
        own = pair_summary(pair_rewards(reference_logps, None, lengths, beta)) if reference_logps is not None else None
    metrics["beta"] = beta
    metrics.update(policy)
    if own is not None:
        metrics.update({f"reference_{k}": v for k, v in own.items()})
    return Evaluation(metrics=metrics, rows=_rows(metrics, own is not None))


def _rows(m: dict[str, Any], with_reference: bool) -> list[Row]:
    """Accuracy of both models; margins of the policy only (the reference's are on another scale)."""
    reference = f"{m['reference_accuracy']:.3f}" if with_reference else ""
    return [
        Row("held-out pairs", "", str(m["pairs"])),
        Row("pair accuracy", reference, f"{m['accuracy']:.3f}"),
        Row("reward margin mean", "", f"{m['margin_mean']:.3f}"),
        Row("reward margin q25", "", f"{m['margin_q25']:.3f}"),
        Row("reward margin median", "", f"{m['margin_median']:.3f}"),
        Row("reward margin q75", "", f"{m['margin_q75']:.3f}"),
    ]
