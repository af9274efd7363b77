"""Imports every family module so their objectives register; add a new family module here."""

from prefrun.objectives import (  # noqa: F401
    joint,
    listwise,
    pairwise,
    reference_free,
    sft,
    soft_label,
    unpaired,
    zoo,
)
