"""One W&B history per run: a resumed run reopens its W&B run; a run that starts clean opens a new one.

W&B runs offline (WANDB_MODE=offline, set in conftest): no network; each open leaves an
``offline-run-<time>-<id>`` folder under the run directory's wandb/, which names the id it logged to.
"""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from prefrun.runtime.tracking import close_wandb, open_wandb

LOGGER = OmegaConf.create(
    {"name": "wandb", "mode": "offline", "project": "prefrun-test", "entity": None, "group": "g", "tags": ["t"]}
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def opened_id(run_dir) -> str:
    """Open and close the run's W&B run as the runner does; the id it logged to."""
    import wandb

    assert open_wandb(LOGGER, run_dir, "run", {"seed": 0})
    run_id = wandb.run.id
    wandb.log({"loss": 0.5})
    close_wandb({"eval/score": 1.0})
    return run_id


def offline_ids(run_dir) -> list[str]:
    return sorted(p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*"))


def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    first = opened_id(run_dir)
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # killed after a checkpoint: it resumes
    again = opened_id(run_dir)
    assert again == first
    assert offline_ids(run_dir) == [first, first]  # both sessions logged to the one W&B run
    assert (run_dir / "wandb" / "run-id").read_text().strip() == first


def test_a_run_that_starts_clean_opens_a_new_wandb_run(tmp_path):
    """Without checkpoints (none yet, run.resume=false, run.overwrite) the steps start over: a new W&B run."""
    run_dir = tmp_path / "run"
    first = opened_id(run_dir)
    second = opened_id(run_dir)
    assert second != first
    assert (run_dir / "wandb" / "run-id").read_text().strip() == second  # the run a later resume continues
    assert not [p for p in os.listdir(run_dir / "wandb") if p.startswith(".run-id")]  # no temporary file left
