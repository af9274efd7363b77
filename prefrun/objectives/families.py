"""Imports every family module so their objectives register; add a new family module here."""

import prefrun.objectives.diffusion  # noqa: F401
import prefrun.objectives.joint  # noqa: F401
import prefrun.objectives.listwise  # noqa: F401
import prefrun.objectives.online  # noqa: F401
import prefrun.objectives.pairwise  # noqa: F401
import prefrun.objectives.pal  # noqa: F401
import prefrun.objectives.reference_free  # noqa: F401
import prefrun.objectives.reward_models  # noqa: F401
import prefrun.objectives.sft  # noqa: F401
import prefrun.objectives.soft_label  # noqa: F401
import prefrun.objectives.unpaired  # noqa: F401
import prefrun.objectives.zoo  # noqa: F401
