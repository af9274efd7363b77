"""What a task is given and what it provides (the seam between the runner and each kind of run)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class RunContext:
    """The run a task executes in: where it writes, on which device, whether this process writes at all."""

    run_dir: Path
    device: str
    main_process: bool
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, in the order they ran

    @contextlib.contextmanager
    def stage(self, key: str) -> Iterator[None]:
        """Time a stage into ``timings[key]`` (seconds; added to when a stage runs more than once)."""
        started = time.time()
        try:
            yield
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.time() - started


class Task(Protocol):
    name: str
    stage_labels: dict[str, str]  # timings key -> what the summary line calls it

    def check(self, cfg: Any) -> None:
        """Validate settings before anything is written or loaded (a PrefrunError names the bad one)."""

    def prepare(self, cfg: Any) -> None:
        """What must happen once, in one process, before ranks start (caches, downloads)."""

    def run(self, cfg: Any, ctx: RunContext) -> dict[str, Any]:
        """Do the work; return the task's results (the runner adds timings and writes results.json)."""
