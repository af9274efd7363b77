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
