"""Every experiment preset composes, and so does every variant of a study preset (its overrides and grid
points), with the task, objective and settings its YAML says: a broken preset fails here, not hours into
`make repro-*`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF, compose_cfg
from omegaconf import OmegaConf

from prefrun.objectives.config import build_objective

PRESETS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))


def _trains(task: str) -> str:
    return {"reward_model": "reward_model", "diffusion": "diffusion"}.get(task, "policy")


@pytest.mark.parametrize("name", PRESETS)
def test_the_preset_composes_and_its_objective_builds(tmp_path, name):
    cfg = compose_cfg(tmp_path, f"experiment={name}")
    assert cfg.experiment_name.startswith(name.split("_")[0])
    build_objective(cfg.objective, trains=_trains(cfg.task.name))


def _variant_overrides(name: str, tmp_path) -> list[list[str]]:
    cfg = compose_cfg(tmp_path, f"experiment={name}")
    if "study" not in cfg:
        return []
    study = OmegaConf.to_container(cfg.study, resolve=True)
    points = []
    for spec in study["variants"].values():  # each variant at its grid's last point (its largest values)
        grid = spec["grid"] or {}
        points.append([*spec["overrides"], *(f"{k}={values[-1]}" for k, values in grid.items())])
    return points


@pytest.mark.parametrize("name", PRESETS)
def test_every_study_variant_composes_with_its_objective(tmp_path, name):
    for overrides in _variant_overrides(name, tmp_path):
        cfg = compose_cfg(tmp_path, f"experiment={name}", *overrides)
        objective = build_objective(cfg.objective, trains=_trains(cfg.task.name))
        for item in overrides:
            key, _, value = item.partition("=")
            if key == "objective":
                assert objective.name == value
            elif "." in key:  # a setting the variant names holds its value in the composed config
                assert str(OmegaConf.select(cfg, key)) == value, item


def test_online_vs_offline_arms_differ_only_in_what_the_study_compares(tmp_path):
    offline = compose_cfg(tmp_path, "experiment=online_vs_offline", "objective=dpo", "online.iterations=1")
    online = compose_cfg(tmp_path, "experiment=online_vs_offline", "objective=dpo")
    assert offline.task.name == online.task.name == "online"
    assert offline.online.iterations == 1 and online.online.iterations is None
    assert (offline.train.steps, offline.train.batch_size) == (online.train.steps, online.train.batch_size)
    assert {"oracle", "preference"} <= set(online.eval)
