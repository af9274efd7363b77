"""Every dataset preset runs end to end on model=tiny (byte-level fallback), on a local file of its schema.

A fast smoke run: two training steps, no evaluation; the run must finish and write results.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from prefrun.runner import run

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def smoke(tmp_path: Path) -> list[str]:
    """Two training steps on short sequences, no evaluation or logging, everything under ``tmp_path``."""
    return [
        "logger=none",
        "eval=none",
        "train.steps=2",
        "train.batch_size=2",
        "train.max_prompt_len=64",
        "train.max_response_len=64",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/c",
    ]


def compose_and_run(overrides: list[str], run_dir: Path) -> dict:
    """Compose the config the CLI would for ``overrides`` and run it in-process into ``run_dir``."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run(cfg, run_dir, overrides=overrides)


PRESETS = {
    "hh_rlhf": ("hh_rlhf.jsonl", "dpo", [], 2),  # row 3's chosen = rejected: dropped
    "ultrafeedback_binarized": ("ultrafeedback_binarized.jsonl", "dpo", [], 1),  # row 2 is a tie
    "ultrafeedback": ("ultrafeedback_raw.jsonl", "lipo", [], 2),  # row 3 has 1 response < min_k 2
    "nectar": ("nectar.jsonl", "lipo", [], 2),
    "shp": ("shp.jsonl", "ipo", [], 2),  # one tied pair
    "helpsteer2": ("helpsteer2.jsonl", "listmle", [], 3),  # 7 rows, 3 prompts
    "kto_mix": ("kto_mix.jsonl", "kto", [], 3),
    # SFT data with 3 aligned models' per-token log-probs per response, for PoFT
    "local_poft": (
        "poft_sft.jsonl",
        "poft",
        [
            "dataset.schema=scored_responses",
            "dataset.fields.prompt=question",
            "dataset.fields.responses=[answer]",
            "dataset.fields.scores=[quality]",
            "dataset.fields.baseline_logps=aligned_logps",
        ],
        3,
    ),
    "local": (
        "local.csv",
        "dpo",
        [
            "dataset.fields.prompt=question",
            "dataset.fields.chosen=good",
            "dataset.fields.rejected=bad",
            "dataset.fields.score_chosen=good_score",
            "dataset.fields.score_rejected=bad_score",
        ],
        2,  # 3 rows, one tied pair
    ),
}


@pytest.mark.parametrize("case", list(PRESETS))
def test_dataset_preset_trains_on_the_tiny_model(tmp_path, case):
    fixture, objective, extra, examples = PRESETS[case]
    preset = case.removesuffix("_poft")
    overrides = [
        f"dataset={preset}",
        f"dataset.path={FIXTURES / fixture}",
        f"objective={objective}",
        *smoke(tmp_path),
        *extra,
    ]
    results = compose_and_run(overrides, tmp_path / "run")
    assert results["training"]["examples"] == examples
    assert json.loads((tmp_path / "run" / "results.json").read_text())["dataset"] == preset


def test_lora_runs_end_to_end_with_the_base_model_as_reference(tmp_path):
    overrides = [
        "model.peft=lora",
        "logger=none",
        "eval=none",
        "train.steps=2",
        "train.batch_size=4",
        "dataset.train_prompts=16",
        "sft.enabled=false",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/c",
    ]
    results = compose_and_run(overrides, tmp_path / "run")
    assert results["training"]["examples"] == 16
    assert results["training"]["reference_forwards"] > 0  # reference = the base model with the adapter off


def test_wandb_logs_offline_into_the_run_directory_without_an_account(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    overrides = [
        "logger=wandb",
        "eval=none",
        "train.steps=2",
        "train.batch_size=4",
        "dataset.train_prompts=8",
        "sft.enabled=false",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/c",
    ]
    compose_and_run(overrides, tmp_path / "run")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].glob("*.wandb"))


def test_reward_conditioned_pairs_train_with_any_pairwise_objective(tmp_path):
    overrides = [
        "dataset=ultrafeedback_binarized",
        f"dataset.path={FIXTURES / 'ultrafeedback_binarized.jsonl'}",
        "dataset.augment=reward_conditioned",
        "objective=ipo",
        "logger=none",
        "eval=none",
        "train.steps=2",
        "train.batch_size=2",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/c",
    ]
    plain = overrides[:2] + overrides[3:]
    augmented = compose_and_run(overrides, tmp_path / "aug")["training"]["examples"]
    assert augmented == 2 * compose_and_run(plain, tmp_path / "plain")["training"]["examples"]


def test_joint_preferences_in_doves_format_train_jpo_end_to_end(tmp_path):
    """DOVE's rows (i_chosen, r_chosen, i_reject, r_reject) through dataset=local, trained by objective=jpo."""
    overrides = [
        "dataset=local",
        f"dataset.path={FIXTURES / 'dove_joint.jsonl'}",
        "dataset.fields.prompt=i_chosen",
        "dataset.fields.chosen=r_chosen",
        "dataset.fields.prompt_rejected=i_reject",
        "dataset.fields.rejected=r_reject",
        "objective=jpo",
        *smoke(tmp_path),
    ]
    results = compose_and_run(overrides, tmp_path / "run")
    assert results["training"]["examples"] == 6 and results["training"]["shared_prompt"] is False
    with pytest.raises(ValueError, match="train.shared_prompt=on cannot pack: objective jpo scores the prompt tokens"):
        compose_and_run([*overrides, "train.shared_prompt=on", "run.overwrite=true"], tmp_path / "run2")
