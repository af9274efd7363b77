"""The reference UNet: the tiny UNet pretrained on the synthetic distribution, cached by content key.

The diffusion counterpart of the text SFT reference (``prefrun.trainers.sft_stage``), built the same way:
the key hashes everything that determines the weights (the model's sizes, the data's settings, the
pretraining recipe, the library versions), the entry is trained into a temporary sibling and renamed (a
killed run never leaves half a model), and a lock per key makes a second run that needs it wait for the
first one's entry instead of training it too. A sweep pays for it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from prefrun.results.files import temp_path
from prefrun.runtime.locks import locked

RECIPE = 1  # bump when the pretraining code changes what it writes
LOG_NAME = "pretrain_metrics.jsonl"


def reference_key(model: dict[str, Any], data: dict[str, Any], recipe: dict[str, Any]) -> str:
    versions = {}
    for name in ("torch", "diffusers", "transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    blob = {"recipe": RECIPE, "stack": versions, "model": model, "data": data, "cfg": recipe}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrained_reference(
    build: Any, train: Any, *, key: str, cache_dir: str | os.PathLike, run_dir: Path | None = None
) -> Path:
    """The cached reference directory for ``key``: ``train(build(), tmp)`` writes it when it is missing.

    ``run_dir``: the pretraining's log is appended to the run's metrics.jsonl (stage "sft"), also from cache.
    """
    from prefrun.results.progress import stage_message

    out = Path(cache_dir) / f"unet-{key}"
    if not (out / "config.json").exists():

        def waiting(pid: int | None) -> None:
            stage_message(f"reference UNet: waiting for another run (pid {pid or 'unknown'}) computing key {key}")

        with locked(out.with_name(f".{out.name}.lock"), on_wait=waiting):
            if not (out / "config.json").exists():
                tmp = temp_path(out)
                try:
                    train(build(), tmp)
                    os.replace(tmp, out)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                _copy_log(out, run_dir)
                return out
    stage_message(f"reference UNet: cached (key {key})")
    _copy_log(out, run_dir)
    return out


def _copy_log(model_dir: Path, run_dir: Path | None) -> None:
    from prefrun.results.metrics_log import MetricsFile

    source = model_dir / LOG_NAME
    if run_dir is None or not source.exists():
        return
    target = MetricsFile(Path(run_dir) / "metrics.jsonl")
    target.path.parent.mkdir(parents=True, exist_ok=True)
    if any(row.get("stage") == "sft" for row in target.rows()):  # a resumed run logged it already
        return
    for row in MetricsFile(source).rows():
        target.append(row)
