"""Imports every family module so their objectives register; add a new family module here."""

from prefrun.objectives import listwise, pairwise, reference_free, sft, soft_label, unpaired, zoo  # noqa: F401
