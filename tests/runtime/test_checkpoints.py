"""Ctrl-C during training checkpoints like SIGTERM: a stop at the end of the step, not a KeyboardInterrupt."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from prefrun.runtime.checkpoints import _Preemption


def _control():
    return SimpleNamespace(should_save=False, should_training_stop=False)


@pytest.fixture()
def preemption():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    p = _Preemption()
    p.install()
    p.before = before
    yield p
    p.uninstall()


def test_ctrl_c_saves_a_checkpoint_at_the_end_of_the_step_and_stops(preemption, capsys):
    os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the handler takes it
    assert preemption.requested == signal.SIGINT
    control = preemption.on_step_end(None, None, _control())
    assert control.should_save and control.should_training_stop and preemption.preempted
    assert capsys.readouterr().err == (
        "prefrun: SIGINT: saving a checkpoint at the end of this step, then stopping "
        "(Ctrl-C again stops at once, without it)\n"
    )
    with pytest.raises(SystemExit) as raised:
        preemption.exit_if_preempted()
    assert raised.value.code == 75
    assert capsys.readouterr().err == (
        "prefrun: stopped by SIGINT at a saved checkpoint; rerun the same command to resume\n"
    )


def test_a_second_ctrl_c_stops_a_single_process_at_once(preemption):
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is preemption.before[signal.SIGINT]  # the handler is gone


def test_under_ranks_repeated_sigints_still_wait_for_the_checkpoint(preemption, monkeypatch):
    """Each rank gets the terminal's SIGINT and torchrun's forwarded one: neither may abort the checkpoint."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    for _ in range(3):
        os.kill(os.getpid(), signal.SIGINT)
    assert preemption.requested == signal.SIGINT


def test_the_previous_handlers_come_back_after_training(preemption):
    preemption.uninstall()
    assert {sig: signal.getsignal(sig) for sig in preemption.before} == preemption.before
