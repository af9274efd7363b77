"""Objectives: pure functions of [B, K] tensors, registered by name.

from prefrun.objectives import get_objective, available_objectives
obj = get_objective("dpo", beta=0.1)
out = obj(policy_logps, ref_logps, scores, mask=mask, lengths=lengths)
"""

from prefrun.objectives.registry import (
    Objective,
    ObjectiveOutput,
    ObjectiveSpec,
    available_objectives,
    get_objective,
    get_spec,
    register,
)

__all__ = [
    "Objective",
    "ObjectiveOutput",
    "ObjectiveSpec",
    "available_objectives",
    "get_objective",
    "get_spec",
    "register",
]

# The family modules register their objectives on import; the registry itself imports none of them.
from prefrun.objectives import families  # noqa: E402, F401
