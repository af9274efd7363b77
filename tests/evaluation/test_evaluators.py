"""The evaluator registry and the eval config group: evaluators compose, each under its own key."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from prefrun.config import CONF_DIR
from prefrun.errors import PrefrunError
from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.base import Row, header, render_rows


def eval_block(*overrides: str) -> dict:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides)).eval


def test_an_unknown_evaluator_lists_the_available_ones():
    with pytest.raises(PrefrunError) as e:
        EVALUATORS.get("oracel")
    message = str(e.value)
    assert "unknown evaluator 'oracel'" in message and "eval=<name>" in message
    for name in ("judge", "oracle", "preference", "reward"):
        assert name in message
    assert EVALUATORS.names() == ["judge", "oracle", "preference", "reward"]


def test_the_default_is_the_oracle_and_evaluators_compose():
    default = eval_block()
    assert list(default) == ["split", "oracle"] and default.split == "test"
    assert default.oracle == {"prompts": 256, "max_new_tokens": 24, "batch_size": 256, "seed": 1234}
    assert list(eval_block("eval=[preference,judge]")) == ["split", "preference", "judge"]
    assert list(eval_block("eval=none")) == ["split"]
    assert eval_block("eval.oracle.prompts=16").oracle.prompts == 16
    assert eval_block("eval.split=validation").split == "validation"


def test_every_eval_preset_holds_only_its_own_block():
    for name in EVALUATORS.names():
        block = eval_block(f"eval=[{name}]")
        assert set(block) == {"split", name}, name


def test_rows_render_in_the_tables_columns():
    lines = render_rows(
        [Row("win rate vs reference", "", "0.643"), Row("oracle reward", "0.873", "0.913"), Row("a note")]
    )
    assert lines == [
        "win rate vs reference" + " " * (1 + 16 + 5) + "0.643",  # columns of 22, 16 and 10 characters
        "oracle reward" + " " * (9 + 11) + "0.873" + " " * 5 + "0.913",
        "a note",
    ]
    assert header() == " " * 22 + " reference (SFT)    policy"
