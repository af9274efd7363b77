"""Imports every family module so their objectives register; add a new family module here."""

from prefrun.objectives import listwise, pairwise, sft, zoo  # noqa: F401
