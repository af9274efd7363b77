"""An objective that needs the sampling policy's log-probs (old_logps) is refused offline, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from prefrun.errors import PrefrunError
from prefrun.tasks import TASKS

CONF = str(Path(__file__).resolve().parents[2] / "conf")


@pytest.mark.parametrize("objective", ["rloo", "grpo", "p3o"])
def test_an_objective_with_old_logps_is_refused_by_the_preference_task(objective):
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", "task=preference", f"objective={objective}"])
    with pytest.raises(PrefrunError) as err:
        TASKS.get(cfg.task.name)().check(cfg)
    assert str(err.value) == f"objective={objective} samples from the policy: run it with task=online"
