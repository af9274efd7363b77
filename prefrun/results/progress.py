"""What a researcher sees while a run works: one progress display for every long stage, and stage messages.

Every long stage (SFT, reference log-probs, preference training, sampling, evaluation) reports through
``Progress``: position/total, rate, ETA and the few metrics that matter (loss, margin or reward).

- In a terminal (stdout is a TTY): a tqdm bar, the metrics as its postfix.
- Otherwise (SLURM logs, CI, ``| tee``): a plain line about every 10% of the stage (or every ``every``
  steps), e.g. ``[train] step 40/200 (20%) 3.1 it/s ETA 52s loss 0.61 margin 0.42``, and a closing
  ``[train] done: step 200/200 in 1m05s (3.1 it/s) ...`` line.
- ``run.quiet=true`` (``set_quiet(True)``, once per process): nothing, stage messages included.

``TrainingProgress`` is the Trainer callback (SFT and preference training); ``attach_progress`` swaps it in
for transformers' own printer, whose raw ``{'loss': ...}`` dicts would otherwise reach stdout. The full
dicts stay in metrics.jsonl and W&B. ``progress(iterable, stage)`` wraps any loop; ``stage_message`` prints
the one line a stage says when it starts or is served from a cache.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from transformers import TrainerCallback

_state = {"quiet": False}
_open_bars: list[Any] = []  # tqdm bars being drawn: messages are written above them, not through them

# The metrics worth a glance, in display order: (key in the trainer's logs, short label).
DISPLAY_METRICS = (
    ("loss", "loss"),
    ("rewards/margins", "margin"),
    ("reward", "reward"),
    ("rewards/accuracies", "acc"),
    ("mean_token_accuracy", "acc"),  # SFT
)


def set_quiet(quiet: bool) -> None:
    """``run.quiet``: silence progress and stage messages of this process (call once, at the start of a run)."""
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _state["quiet"]


def stage_message(text: str, stream: TextIO | None = None) -> None:
    """Print one line saying what a stage does ("SFT reference: cached (key ...)"), unless quiet."""
    if is_quiet():
        return
    stream = stream or sys.stdout
    if _open_bars:
        from tqdm import tqdm

        tqdm.write(text, file=stream)
    else:
        print(text, file=stream, flush=True)


def format_duration(seconds: float) -> str:
    """52s, 3m12s, 1h02m."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def format_rate(per_second: float, unit: str = "it") -> str:
    """``3.1 it/s``, or ``2.5 s/it`` below one per second."""
    if per_second <= 0:
        return f"? {unit}/s"
    if per_second >= 1:
        return f"{per_second:.1f} {unit}/s"
    return f"{1 / per_second:.1f} s/{unit}"


def display_metrics(logs: dict[str, Any], limit: int = 3) -> dict[str, float]:
    """The few metrics of ``logs`` worth showing, under their short labels (first match of a label wins)."""
    shown: dict[str, float] = {}
    for key, label in DISPLAY_METRICS:
        value = logs.get(key)
        if label not in shown and isinstance(value, int | float) and len(shown) < limit:
            shown[label] = float(value)
    return shown


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{label} {value:.3g}" for label, value in metrics.items())


class Progress:
    """Progress of one stage: ``advance``/``update`` the position, ``set_metrics``, ``close`` (or use ``with``).

    ``total`` None: unknown length (plain lines then come every 30 s). ``label``: the word before the count in
    plain lines ("step 40/200"); ``unit``: the rate's unit. ``terminal`` None: whether ``stream`` is a TTY.
    ``min_interval``: seconds between plain lines at least, so that a stage of a few seconds (sampling,
    scoring) says only its closing line.
    """

    def __init__(
        self,
        stage: str,
        total: int | None,
        *,
        label: str = "",
        unit: str = "it",
        every: int | None = None,
        min_interval: float = 0.0,
        start: int = 0,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        clock: Any = time.monotonic,
    ):
        self.stage, self.total, self.label, self.unit = stage, total, label, unit
        self.position = self.start = self._printed = start
        self.metrics: dict[str, float] = {}
        self.stream = stream or sys.stdout
        self._clock = clock
        self._began = self._printed_at = clock()
        self.quiet = is_quiet()
        if terminal is None:
            terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every or (max(1, math.ceil(total / 10)) if total else None)
        self.min_interval = min_interval
        self._bar = None
        if terminal and not self.quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, desc=stage, unit=unit, file=self.stream, dynamic_ncols=True)
            _open_bars.append(self._bar)
        self.closed = False

    # --- position and metrics ---------------------------------------------------------------------------
    def advance(self, to: int) -> None:
        """Move to position ``to`` without printing (a metrics update for this position may follow)."""
        if self._bar is not None:
            self._bar.update(to - self.position)
        self.position = to

    def set_metrics(self, **metrics: float) -> None:
        self.metrics.update({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        if self._bar is not None:
            self._bar.set_postfix_str(_metrics_text(self.metrics), refresh=False)

    def update(self, n: int = 1, **metrics: float) -> None:
        """Advance by ``n`` (items, batches, steps), record ``metrics``, print a plain line when one is due."""
        self.advance(self.position + n)
        if metrics:
            self.set_metrics(**metrics)
        self.maybe_print()

    # --- output -----------------------------------------------------------------------------------------
    def rate(self) -> float:
        elapsed = self._clock() - self._began
        return (self.position - self.start) / elapsed if elapsed > 0 else 0.0

    def _count(self) -> str:
        count = f"{self.position:,}/{self.total:,}" if self.total else f"{self.position:,}"
        return f"{self.label} {count}" if self.label else count

    def line(self) -> str:
        """``[train] step 40/200 (20%) 3.1 it/s ETA 52s loss 0.61``: the plain line for the current position."""
        parts = [f"[{self.stage}]", self._count()]
        if self.total:
            parts.append(f"({100 * self.position / self.total:.0f}%)")
        rate = self.rate()
        parts.append(format_rate(rate, self.unit))
        if self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.position) / rate)}")
        if self.metrics:
            parts.append(_metrics_text(self.metrics))
        return " ".join(parts)

    def maybe_print(self) -> None:
        """In plain mode, print a line every ``every`` positions (every 30 s without a total), except the last."""
        if self.quiet or self._bar is not None or self.closed:
            return
        if self.total and self.position >= self.total:
            return  # the closing line says it
        since = self._clock() - self._printed_at
        due = self.position - self._printed >= self.every if self.every else since >= 30
        if due and since >= self.min_interval and self.position > self._printed:
            print(self.line(), file=self.stream, flush=True)
            self._printed, self._printed_at = self.position, self._clock()

    def close(self) -> None:
        """Finish the bar, or print the closing plain line (position, wall time, mean rate, last metrics)."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
            _open_bars.remove(self._bar)
            return
        if self.quiet or self.position == self.start:
            return
        text = f"[{self.stage}] done: {self._count()} in {format_duration(self._clock() - self._began)}"
        text += f" ({format_rate(self.rate(), self.unit)})"
        if self.metrics:
            text += " " + _metrics_text(self.metrics)
        print(text, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    iterable: Iterable[Any], stage: str, total: int | None = None, *, label: str = "", unit: str = "it", **kwargs: Any
) -> Iterator[Any]:
    """Iterate ``iterable`` with a progress display (``total`` defaults to ``len(iterable)`` when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(stage, total, label=label, unit=unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()


class TrainingProgress(TrainerCallback):
    """Progress of a Trainer's optimisation steps (SFT, preference training), shown by the main process only.

    Plain lines come about every 10% of the steps, at logging steps so that they carry fresh metrics.
    """

    def __init__(self, stage: str, *, stream: TextIO | None = None, terminal: bool | None = None):
        self.stage, self.stream, self.terminal = stage, stream, terminal
        self.bar: Progress | None = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        if state.is_world_process_zero:
            start = state.global_step  # a resumed run starts part-way
            self.bar = Progress(
                self.stage, state.max_steps, label="step", start=start, stream=self.stream, terminal=self.terminal
            )
            self._logging_steps = max(1, int(state.logging_steps or 1))

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.bar is not None:
            self.bar.advance(state.global_step)
            if state.global_step % self._logging_steps:  # a logging step prints from on_log, with its metrics
                self.bar.maybe_print()

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if self.bar is not None and logs and "train_runtime" not in logs:
            self.bar.set_metrics(**display_metrics(logs))
            self.bar.maybe_print()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def attach_progress(trainer: Any, stage: str, **kwargs: Any) -> TrainingProgress:
    """Replace the Trainer's own log printer / progress bar with ``TrainingProgress(stage)``; returns it.

    With ``disable_tqdm=True`` transformers adds a PrinterCallback that prints every log dict; without it, a
    tqdm ProgressCallback that writes the same dicts under its bar. Both go; metrics.jsonl and W&B keep them.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    callback = TrainingProgress(stage, **kwargs)
    trainer.add_callback(callback)
    return callback
