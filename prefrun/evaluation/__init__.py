"""Evaluation of a trained policy, by registered evaluators (``eval=[oracle]``, ``eval=[preference,judge]``).

    oracle      sample policy and reference, score with the synthetic task's oracle: reward, win rate, KL
    preference  implicit-reward pairwise accuracy and margins on the held-out preference records
    reward      sample policy and reference, score both with the run's reward source: means, win rate, KL
    judge       pairwise win rate by the reward source's ``prefer`` (a judge), interval, length-controlled

Each is ``evaluate(inputs: EvalInputs, settings) -> Evaluation`` with its settings in ``cfg.eval.<name>``.
"""

from __future__ import annotations

from prefrun.evaluation.base import EvalInputs, Evaluation, Row, header, render_rows
from prefrun.registry import Registry

EVALUATORS = Registry(
    "evaluator",
    modules=(
        "prefrun.evaluation.oracle",
        "prefrun.evaluation.preference",
        "prefrun.evaluation.reward",
        "prefrun.evaluation.judge",
    ),
    config_key="eval",
)

__all__ = ["EVALUATORS", "EvalInputs", "Evaluation", "Row", "header", "render_rows"]
