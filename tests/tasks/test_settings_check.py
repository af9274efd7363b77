"""A task's check() refuses every out-of-range or mistyped numeric setting with one line, before any work.

Before these checks ``train.steps=-5`` trained 600 steps (TRL read it as "3 epochs"), ``train.steps=0`` one
step, ``train.lr=abc`` raised a TypeError inside the optimizer, ``seed=abc`` a ValueError, and
``eval.oracle.prompts=0`` a StatisticsError after training had finished.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from prefrun.errors import PrefrunError
from prefrun.tasks import TASKS

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def compose_cfg(*overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("config", overrides=["logger=none", *overrides])


def check(*overrides: str) -> None:
    cfg = compose_cfg(*overrides)
    TASKS.get(cfg.task.name)().check(cfg)


# override -> the whole message a user reads (after "prefrun: error: ")
REFUSED = {
    "train.steps=-5": "train.steps=-5 is out of range: it must be an integer ≥ 1 "
    "(optimizer steps of preference training); e.g. train.steps=200",
    "train.steps=0": "train.steps=0 is out of range: it must be an integer ≥ 1 "
    "(optimizer steps of preference training); e.g. train.steps=200",
    "train.steps=2.5": "train.steps=2.5 is not an integer: it must be an integer ≥ 1 "
    "(optimizer steps of preference training); e.g. train.steps=200",
    "train.lr=abc": "train.lr='abc' is not a finite number: it must be a number ≥ 0 "
    "(learning rate; 0 = a control run); e.g. train.lr=1e-5",
    "train.lr=-1e-5": "train.lr=-1e-05 is out of range: it must be a number ≥ 0 "
    "(learning rate; 0 = a control run); e.g. train.lr=1e-5",
    "train.lr=nan": "train.lr=nan is not a finite number: it must be a number ≥ 0 "
    "(learning rate; 0 = a control run); e.g. train.lr=1e-5",
    "seed=abc": "seed='abc' is not an integer: it must be an integer ≥ 0 (the run's random seed); e.g. seed=0",
    "seed=true": "seed=True is not an integer: it must be an integer ≥ 0 (the run's random seed); e.g. seed=0",
    "eval.oracle.prompts=0": "eval.oracle.prompts=0 is out of range: it must be an integer ≥ 1 "
    "(held-out prompts to sample); e.g. eval.oracle.prompts=256",
    "train.batch_size=0": "train.batch_size=0 is out of range: it must be an integer ≥ 1 "
    "(prompts per optimizer step, over all ranks); e.g. train.batch_size=32",
    "train.max_prompt_len=0": "train.max_prompt_len=0 is out of range: it must be an integer ≥ 1 "
    "(tokens per prompt); e.g. train.max_prompt_len=128",
    "train.logging_steps=0": "train.logging_steps=0 is out of range: it must be an integer ≥ 1 "
    "(steps between logged metrics); e.g. train.logging_steps=10",
    "run.checkpoint_steps=-1": "run.checkpoint_steps=-1 is out of range: it must be an integer ≥ 0 "
    "(steps between checkpoints; 0 = none); e.g. run.checkpoint_steps=100",
    "dataset.k=0": "dataset.k=0 is out of range: it must be an integer ≥ 1 or null "
    "(responses per prompt; null = all); e.g. dataset.k=4",
    "generation.temperature=-1": "generation.temperature=-1 is out of range: it must be a number ≥ 0 "
    "(0 = greedy); e.g. generation.temperature=1.0",
    "generation.top_p=0": "generation.top_p=0 is out of range: it must be a number in (0, 1] "
    "(1.0 = off); e.g. generation.top_p=0.9",
    "generation.top_p=1.5": "generation.top_p=1.5 is out of range: it must be a number in (0, 1] "
    "(1.0 = off); e.g. generation.top_p=0.9",
    "generation.max_new_tokens=0": "generation.max_new_tokens=0 is out of range: it must be an integer ≥ 1 "
    "(tokens per sample); e.g. generation.max_new_tokens=128",
    "sft.steps=0": "sft.steps=0 is out of range: it must be an integer ≥ 1 (SFT optimizer steps); e.g. sft.steps=1000",
    "hardware.num_processes=0": "hardware.num_processes=0 is out of range: it must be an integer ≥ 1 "
    "(ranks per node); e.g. hardware.num_processes=2",
}


@pytest.mark.parametrize("override", list(REFUSED))
def test_a_bad_setting_is_refused_by_the_preference_task_check(override):
    with pytest.raises(PrefrunError) as e:
        check(override)
    assert str(e.value) == REFUSED[override]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["eval=[oracle,judge]", "eval.judge.prompts=0"],
            "eval.judge.prompts=0 is out of range: it must be an integer ≥ 1 (held-out prompts to sample); "
            "e.g. eval.judge.prompts=256",
        ),
        (
            ["eval=[reward]", "eval.reward.samples=0"],
            "eval.reward.samples=0 is out of range: it must be an integer ≥ 1 (samples per prompt and model); "
            "e.g. eval.reward.samples=1",
        ),
        (
            ["reward=noisy_oracle", "reward.flip_prob=1.5"],
            "reward.flip_prob=1.5 is out of range: it must be a number in [0, 1] (chance an annotator flips a "
            "vote); e.g. reward.flip_prob=0.2",
        ),
        (
            ["dataset.min_len=9"],
            "dataset.min_len=9 is above dataset.max_len=8; make min_len ≤ max_len",
        ),
    ],
)
def test_settings_of_the_selected_groups_are_checked(overrides, message):
    with pytest.raises(PrefrunError) as e:
        check(*overrides)
    assert str(e.value) == message


def test_the_evaluate_task_checks_its_evaluators_settings_before_looking_for_runs(tmp_path):
    with pytest.raises(PrefrunError, match=r"^eval\.judge\.prompts=-3 is out of range"):
        check("task=evaluate", f"runs={tmp_path}", "eval=[judge]", "reward=oracle", "eval.judge.prompts=-3")


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # the shipped defaults
        ["train.lr=0"],  # the documented control run
        ["train.steps=1", "train.warmup_steps=0", "run.checkpoint_steps=0", "dataset.k=null"],
        ["generation.temperature=0", "generation.top_p=1", "train.steps=1e3"],
        ["objective=lipo", "dataset=nectar", "hardware=ddp"],
        ["eval=[oracle,preference,reward,judge]", "reward=judge", "reward.model=tiny"],
    ],
)
def test_valid_settings_pass(overrides):
    check(*overrides)


def test_the_reward_model_task_checks_its_settings():
    check("task=reward_model", "objective=bt")
    with pytest.raises(PrefrunError, match=r"^reward_model\.eval\.bins=0 is out of range: it must be an integer ≥ 1"):
        check("task=reward_model", "objective=bt", "reward_model.eval.bins=0")
    with pytest.raises(PrefrunError, match=r"^train\.lr='fast' is not a finite number"):
        check("task=reward_model", "objective=bt", "train.lr=fast")
