"""A loaded dataset end to end: training ends with held-out preference figures and a saved policy, and
task=evaluate judges that policy afterwards, writing eval/<evaluator>.json and never its results.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from prefrun.errors import PrefrunError
from prefrun.runner import run, summary_table

CONF = str(Path(__file__).resolve().parents[2] / "conf")
MICRO = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_heads=2"]


def hh_rows(n: int) -> list[dict]:
    """Rows in Anthropic/hh-rlhf's schema: two dialogues sharing their prompt up to the last Assistant turn."""
    rows = []
    for i in range(n):
        prompt = f"\n\nHuman: what comes after {i}?\n\nAssistant:"
        rows.append({"chosen": f"{prompt} {i + 1} comes next.", "rejected": f"{prompt} no idea, sorry."})
    return rows


def compose_cfg(tmp: Path, *overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp}/out", f"paths.cache_dir={tmp}/cache", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("hh")
    data = tmp / "hh.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in hh_rows(24)))
    overrides = [
        "logger=none",
        "dataset=hh_rlhf",
        f"dataset.path={data}",
        "dataset.holdout=0.25",
        "train.steps=2",
        "train.batch_size=4",
        *MICRO,
    ]
    run_dir = tmp / "out" / "runs" / "hh"
    return tmp, run_dir, run(compose_cfg(tmp, *overrides), run_dir, overrides=overrides)


def test_a_loaded_dataset_ends_with_held_out_preference_figures_and_its_policy(trained):
    _, run_dir, results = trained
    ev = results["eval"]
    assert ev["preference/pairs"] == 6  # a quarter of 24 rows held out (and not trained on)
    assert 0.0 <= ev["preference/accuracy"] <= 1.0 and "preference/margin_median" in ev
    assert "pair accuracy" in summary_table(results)
    assert (run_dir / "model" / "model.safetensors").is_file() and results["model_dir"]["bytes"] > 0


def test_evaluate_judges_the_saved_policy_without_touching_its_results(trained):
    tmp, run_dir, _ = trained
    before = hashlib.sha256((run_dir / "results.json").read_bytes()).hexdigest()
    overrides = ["task=evaluate", f"runs={tmp}/out/runs", "eval=[judge]", "reward=judge", "reward.model=tiny"]
    cfg = compose_cfg(tmp, "logger=none", *overrides, "reward.max_new_tokens=8")
    results = run(cfg, tmp / "out" / "evaluate" / "1", overrides=overrides)
    judged = json.loads((run_dir / "eval" / "judge.json").read_text())["metrics"]
    assert judged["judge/pairs"] == 6
    assert judged["judge/win_rate_low"] <= judged["judge/win_rate"] <= judged["judge/win_rate_high"]
    assert 0.0 <= judged["judge/unparsed_rate"] <= 1.0  # a random tiny judge rarely says "final decision is"
    assert hashlib.sha256((run_dir / "results.json").read_bytes()).hexdigest() == before
    assert "judge win rate" in summary_table(results)
    stamp = (run_dir / "eval" / "judge.json").stat().st_mtime_ns  # the same settings again: nothing to redo
    run(compose_cfg(tmp, "logger=none", *overrides, "reward.max_new_tokens=8"), tmp / "out" / "evaluate" / "2")
    assert (run_dir / "eval" / "judge.json").stat().st_mtime_ns == stamp


def test_evaluate_refuses_a_folder_without_finished_runs(tmp_path):
    cfg = compose_cfg(tmp_path, "logger=none", "task=evaluate", f"runs={tmp_path}/nothing", "eval=[judge]")
    with pytest.raises(PrefrunError, match=r"no finished run \(a directory with results.json\)"):
        run(cfg, tmp_path / "ev")


def test_evaluate_refuses_a_run_without_a_saved_model(trained, tmp_path):
    _, run_dir, _ = trained
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("results.json", "config.yaml"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    cfg = compose_cfg(tmp_path, "logger=none", "task=evaluate", f"runs={copy}", "eval=[preference]")
    with pytest.raises(PrefrunError, match=r"has no saved model \(model/\).*run.save_model=false"):
        run(cfg, tmp_path / "ev")
