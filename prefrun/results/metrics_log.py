"""metrics.jsonl: one JSON line per logged step, the same numbers the trainer sends to W&B."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class MetricsFile:
    """Append-only JSON lines; ``truncate_after(step)`` drops lines a resumed run will log again."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill mid-write
                break
        return rows

    def truncate_after(self, step: int, stage: str | None = None) -> None:
        """Drop the lines of ``stage`` (of every stage when None) past ``step``, and a line torn by a kill."""
        from prefrun.results.files import write_atomic

        keep = [r for r in self.rows() if r.get("step", 0) <= step or stage not in (None, r.get("stage", stage))]
        write_atomic(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


class MetricsFileCallback(TrainerCallback):
    """Writes each ``Trainer.log`` call as a line tagged with its stage (sft, train, stage2, ...)."""

    def __init__(self, metrics: MetricsFile, stage: str, is_main_process: bool = True):
        self.metrics = metrics
        self.stage = stage
        self.is_main_process = is_main_process

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        if self.is_main_process and logs:
            # The end-of-training summary (runtime, mean loss) shares the last step; mark it apart.
            kind = "summary" if "train_runtime" in logs else "step"
            self.metrics.append({"stage": self.stage, "step": state.global_step, "kind": kind, **logs})


def training_summary(metrics_path: Path) -> dict[str, float]:
    """From metrics.jsonl: the change of the chosen/rejected log-probs over training, mean entanglement ratio."""
    # The SFT stage's lines (stage "sft") describe the reference, not preference training.
    rows = [r for r in MetricsFile(metrics_path).rows() if r.get("kind") == "step" and r.get("stage") != "sft"]
    summary: dict[str, float] = {}
    for key in ("logps/chosen", "logps/rejected"):
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if len(values) >= 2:
            summary[f"{key}_change"] = values[-1] - values[0]
    ratios = [r["entanglement/ratio"] for r in rows if isinstance(r.get("entanglement/ratio"), int | float)]
    if ratios:
        summary["entanglement/ratio_mean"] = sum(ratios) / len(ratios)
    return summary
