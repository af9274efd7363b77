"""Every conf/objective option composes to a registered objective with exactly its hyperparameters.

A base file (no defaults list) is named after its objective and repeats the function's defaults; a
preset (e.g. dpo_sort) starts from a base file through its defaults list and may change values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prefrun.objectives import get_objective, get_spec
from prefrun.objectives.config import OBJECTIVE_META

CONF = Path(__file__).resolve().parents[2] / "conf"
OPTIONS = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))


@pytest.mark.parametrize("option", OPTIONS)
def test_objective_option_composes_to_its_registered_spec(option):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"objective={option}"])
    conf = OmegaConf.to_container(cfg.objective, resolve=True)
    spec = get_spec(conf.pop("name"))
    assert conf.pop("data") == spec.data
    assert conf.pop("needs_reference") is spec.needs_reference
    for key in OBJECTIVE_META - {"name", "data", "needs_reference"}:  # run settings (udm, baselines), not hparams
        conf.pop(key, None)
    assert set(conf) == set(spec.defaults)
    get_objective(spec.name, **conf)
    raw = yaml.safe_load((CONF / "objective" / f"{option}.yaml").read_text())
    if "defaults" not in raw:
        assert spec.name == option
        assert conf == pytest.approx(spec.defaults)
