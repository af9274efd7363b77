"""Library output a run does not want, switched off in this one place, each for a stated reason.

The causes of library warnings are fixed where prefrun calls the libraries (the SFT stage sets
``activation_checkpointing`` itself instead of inheriting TRL's deprecated ``gradient_checkpointing`` default;
the list trainer asks ``is_activation_checkpointing``). What remains here cannot be fixed from prefrun:

- transformers' and datasets' own progress bars ("Loading weights", "Writing model shards", "Building
  labels for train dataset"): one bar per internal step, unreadable in a log file, and prefrun draws one
  display per stage instead (``prefrun.results.progress``). Hub download bars stay: a download is a long
  stage of its own.
- peft's ``PeftModel.__init__`` reads the deprecated ``model.is_gradient_checkpointing`` (transformers warns
  a FutureWarning on every LoRA run); nothing prefrun passes avoids that read.
"""

from __future__ import annotations

import os
import warnings

# (message regex, category): warnings raised inside libraries by code prefrun cannot change.
UNFIXABLE_WARNINGS = ((r"`is_gradient_checkpointing` is deprecated", FutureWarning),)  # peft's PeftModel.__init__


def quiet_libraries() -> None:
    """Turn off the library progress bars and the unfixable warnings above (idempotent; once per process)."""
    for message, category in UNFIXABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # also turns off huggingface_hub's bars: turned back on below
    import huggingface_hub.utils

    if "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ:
        huggingface_hub.utils.enable_progress_bars()
    if "HF_DATASETS_DISABLE_PROGRESS_BARS" not in os.environ:  # the user's explicit choice wins (and no warning)
        import datasets

        datasets.disable_progress_bars()
