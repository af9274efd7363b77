"""Progress display: plain lines about every 10% with rate, ETA and metrics off a terminal, a bar on one,
nothing when quiet; the Trainer callback replaces transformers' raw log-dict printer."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from prefrun.results import progress as progress_module
from prefrun.results.progress import (
    Progress,
    TrainingProgress,
    attach_progress,
    display_metrics,
    format_duration,
    progress,
    stage_message,
)


class Clock:
    """A fake monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def not_quiet(monkeypatch):
    monkeypatch.setitem(progress_module._state, "quiet", False)


def test_plain_lines_every_tenth_with_rate_eta_and_the_metrics_then_a_closing_line():
    out, clock = io.StringIO(), Clock()
    bar = Progress("train", 200, label="step", stream=out, terminal=False, clock=clock)
    for _ in range(200):
        clock.now += 0.5  # 2 steps per second
        bar.update(1, loss=0.61, margin=0.42)
    bar.close()
    lines = out.getvalue().splitlines()
    # Every 20 steps (10% of 200) except the last, whose place the closing line takes.
    assert len(lines) == 10
    # Step 40: 40 steps in 20 s = 2.0 it/s; 160 steps left at 2/s = 80 s.
    assert lines[1] == "[train] step 40/200 (20%) 2.0 it/s ETA 1m20s loss 0.61 margin 0.42"
    assert lines[0].startswith("[train] step 20/200 (10%)")
    assert lines[-1] == "[train] done: step 200/200 in 1m40s (2.0 it/s) loss 0.61 margin 0.42"


def test_a_slow_stage_reports_seconds_per_item_and_an_unknown_total_prints_every_30_seconds():
    out, clock = io.StringIO(), Clock()
    bar = Progress("sampling", None, stream=out, terminal=False, clock=clock)
    for _ in range(10):
        clock.now += 10.0  # one item per 10 s
        bar.update()
    lines = out.getvalue().splitlines()
    assert lines == ["[sampling] 3 10.0 s/it", "[sampling] 6 10.0 s/it", "[sampling] 9 10.0 s/it"]


def test_quiet_silences_progress_and_stage_messages(monkeypatch):
    monkeypatch.setitem(progress_module._state, "quiet", True)
    out = io.StringIO()
    with Progress("train", 10, stream=out, terminal=False) as bar:
        for _ in range(10):
            bar.update(loss=1.0)
    stage_message("SFT reference: cached (key abc)", stream=out)
    with Progress("train", 10, stream=out, terminal=True) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_a_terminal_gets_one_redrawn_bar_and_messages_above_it():
    out = io.StringIO()
    with Progress("reference log-probs", 4, stream=out, terminal=True) as bar:
        bar.update(2)
        stage_message("a message", stream=out)
        bar.update(2)
    text = out.getvalue()
    assert "\r" in text and "reference log-probs" in text and "4/4" in text
    assert "a message\n" in text
    assert "[reference log-probs]" not in text  # no plain lines on a terminal


def test_the_iterator_wrapper_yields_everything_and_takes_the_length():
    out = io.StringIO()
    items = list(progress(range(30), "eval", stream=out, terminal=False))
    assert items == list(range(30))
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == [f"{n}/30" for n in range(3, 30, 3)] + ["done:"]


def test_only_the_few_metrics_that_matter_are_shown():
    logs = {"loss": 0.5, "grad_norm": 3.0, "rewards/margins": 1.25, "rewards/accuracies": 0.9, "epoch": 0.4}
    assert display_metrics(logs) == {"loss": 0.5, "margin": 1.25, "acc": 0.9}
    assert display_metrics({"loss": 2.0, "mean_token_accuracy": 0.7, "entropy": 1.0}) == {"loss": 2.0, "acc": 0.7}


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (52.2, "52s"), (192, "3m12s"), (3720, "1h02m")])
def test_durations_read_as_a_person_would_write_them(seconds, text):
    assert format_duration(seconds) == text


def _state(step: int, max_steps: int = 100, logging_steps: int = 10) -> SimpleNamespace:
    return SimpleNamespace(
        global_step=step, max_steps=max_steps, logging_steps=logging_steps, is_world_process_zero=True
    )


def test_the_callback_prints_at_logging_steps_with_that_steps_metrics():
    out = io.StringIO()
    callback = TrainingProgress("train", stream=out, terminal=False)
    callback.on_train_begin(None, _state(0), None)
    for step in range(1, 101):
        callback.on_step_end(None, _state(step), None)
        if step % 10 == 0:  # transformers logs after on_step_end of a logging step
            callback.on_log(None, _state(step), None, logs={"loss": 1 / step, "rewards/margins": step / 100})
    callback.on_log(None, _state(100), None, logs={"train_runtime": 1.0, "train_loss": 0.3})
    callback.on_train_end(None, _state(100), None)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[2].startswith("[train] step 30/100 (30%)") and lines[2].endswith("loss 0.0333 margin 0.3")
    assert lines[-1].startswith("[train] done: step 100/100") and lines[-1].endswith("loss 0.01 margin 1")


def test_a_resumed_run_counts_its_rate_from_where_it_resumed():
    out, clock = io.StringIO(), Clock()
    bar = Progress("train", 100, label="step", start=60, stream=out, terminal=False, clock=clock)
    for _ in range(10):
        clock.now += 1.0
        bar.update()
    assert out.getvalue().splitlines() == ["[train] step 70/100 (70%) 1.0 it/s ETA 30s"]


def test_attach_progress_removes_transformers_printers(micro_model_dir, tmp_path):
    from conftest import cpu_dpo_config
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    args = cpu_dpo_config(tmp_path, 2, 1, 1e-3)
    trainer = Trainer(
        model=AutoModelForCausalLM.from_pretrained(micro_model_dir),
        args=args,
        train_dataset=Dataset.from_list([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}] * 2),
        processing_class=AutoTokenizer.from_pretrained(micro_model_dir),
    )
    assert any(isinstance(cb, PrinterCallback) for cb in trainer.callback_handler.callbacks)  # disable_tqdm=True
    attach_progress(trainer, "train")
    kinds = [type(cb) for cb in trainer.callback_handler.callbacks]
    assert PrinterCallback not in kinds and ProgressCallback not in kinds and TrainingProgress in kinds


def test_a_short_stage_with_a_minimum_interval_says_only_its_closing_line():
    clock = Clock()
    out = io.StringIO()
    with Progress(
        "eval oracle: policy samples",
        100,
        label="samples",
        unit="sample",
        min_interval=10,
        stream=out,
        terminal=False,
        clock=clock,
    ) as bar:
        for _ in range(10):  # 10 batches of 10 samples, 0.5 s each: every batch is due by count, none by time
            clock.now += 0.5
            bar.update(10)
    lines = out.getvalue().splitlines()
    assert lines == ["[eval oracle: policy samples] done: samples 100/100 in 5s (20.0 sample/s)"]


def test_a_long_stage_with_a_minimum_interval_prints_at_most_once_per_interval():
    clock = Clock()
    out = io.StringIO()
    with Progress(
        "scoring", 100, label="rows", unit="row", min_interval=10, stream=out, terminal=False, clock=clock
    ) as bar:
        for _ in range(20):  # 20 batches of 5 rows, 4 s each: due by count every other batch, by time every 3rd
            clock.now += 4
            bar.update(5)
    lines = out.getvalue().splitlines()
    # 80 s in all; lines at positions where both 10 rows and 10 s have passed since the last: 15, 30, 45, ...
    assert [line.split()[2] for line in lines[:-1]] == ["15/100", "30/100", "45/100", "60/100", "75/100", "90/100"]
    assert lines[-1].startswith("[scoring] done: rows 100/100 in 1m20s")
