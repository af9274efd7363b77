"""Hyperparameter range checks that objectives' ``validate`` functions share: one-line errors."""

from __future__ import annotations

import math

from prefrun.errors import PrefrunError


def hparam(hp: dict[str, object], field: str) -> float:
    """``hp[field]`` as a float (a one-line error naming the field when it is not a number)."""
    value = hp[field]
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PrefrunError(f"objective.{field}={value!r} is not a number; set objective.{field} to a float") from None


def require(ok: bool, objective: str, field: str, value: float, rule: str, fix: str) -> None:
    """Raise ``objective.<field>=<value> is out of range for <objective>: <rule>; <fix>`` unless ``ok``.

    NaN never passes: write ``ok`` as the condition for a valid value, so every comparison with NaN fails.
    """
    if not ok or math.isnan(value):
        raise PrefrunError(f"objective.{field}={value} is out of range for {objective}: {rule}; {fix}")


def smoothing_below_half(objective: str):
    """A ``validate`` for ``label_smoothing`` ε ∈ [0, 0.5): an assumed label-flip rate (cdpo, robust)."""

    def check(hp: dict[str, object]) -> None:
        eps = hparam(hp, "label_smoothing")
        require(
            0.0 <= eps < 0.5,
            objective,
            "label_smoothing",
            eps,
            "it must be in [0, 0.5) (the assumed label-flip rate)",
            "try 0.1, or 0 for no smoothing",
        )

    return check
