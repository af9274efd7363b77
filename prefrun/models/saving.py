"""Saving a trained policy into its run directory, atomically: ``model/`` appears whole or not at all.

Full weights are written as safetensors with the tokenizer; a PEFT model writes only its adapter (and the
tokenizer), whose ``adapter_config.json`` names the base model it loads onto (``prefrun.models.loading``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

POLICY_DIR = "model"


def save_policy(model: Any, tokenizer: Any, run_dir: Path) -> Path:
    """Write ``model`` (its adapter only, for a PEFT model) and ``tokenizer`` to ``run_dir/model``."""
    dest = run_dir / POLICY_DIR
    tmp = run_dir / f".{POLICY_DIR}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def directory_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
