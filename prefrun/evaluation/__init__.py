"""Evaluation of a trained policy, by registered evaluators (``eval=[oracle]``, ``eval=[preference,judge]``).

    oracle      sample policy and reference, score with the synthetic task's oracle: reward, win rate, KL
    preference  implicit-reward pairwise accuracy and margins on the held-out preference records
    reward      sample policy and reference, score both with the run's reward source: means, win rate, KL
    judge       pairwise win rate by the reward source's ``prefer`` (a judge), interval, length-controlled

Each is ``evaluate(inputs: EvalInputs, settings) -> Evaluation`` with its settings in ``cfg.eval.<name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
SHARED_KEYS = ("split",)  # keys of cfg.eval that are not an evaluator's settings block


def selected(eval_cfg: Mapping[str, Any]) -> list[str]:
    """The evaluators a composed ``eval`` block selects, in order: its keys other than the shared ones.

    ``eval=[oracle,judge]`` composes conf/eval/oracle.yaml and judge.yaml, each holding its settings under
    its own name; ``eval=none`` composes none. Each name is checked against the registry (an unknown one
    is a one-line error listing the available evaluators).
    """
    names = [str(key) for key in eval_cfg if key not in SHARED_KEYS]
    for name in names:
        EVALUATORS.get(name)
    return names


__all__ = ["EVALUATORS", "EvalInputs", "Evaluation", "Row", "header", "render_rows", "selected"]
