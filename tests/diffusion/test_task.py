"""task=diffusion end to end on 8×8 blobs: a 20-step run per objective (results, metrics.jsonl, saved UNet, sample
grid, summary, prefrun-compare), the reference pretrained once for all of them, resume after a kill, and the
one-line refusals of bad input."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from prefrun.errors import PrefrunError
from prefrun.runner import run, summary_table

CONF = str(Path(__file__).resolve().parents[2] / "prefrun" / "conf")
FAST = [
    "task=diffusion",
    "logger=none",
    "hardware.threads=1",  # the tiny UNet's kernels are too small to share; two threads on a loaded machine wait
    "dataset.image_size=8",
    "model.sample_size=8",
    "dataset.margin=1.5",
    "dataset.pretrain_images=128",
    "dataset.train_pairs=32",
    "dataset.eval_pairs=8",
    "sft.steps=10",
    "train.steps=20",
    "train.logging_steps=5",
    "diffusion.eval.samples=8",
    "diffusion.eval.ddim_steps=2",
    "diffusion.eval.implicit_timesteps=1",
]


def compose_cfg(tmp: Path, cache: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp}/out", f"paths.cache_dir={cache}", *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, diffusion_cache):
    tmp = tmp_path_factory.mktemp("diffusion_runs")
    out = {}
    for name in ("diffusion_dpo", "mapo", "diffusion_sft"):
        overrides = [*FAST, f"objective={name}"]
        started = time.time()
        results = run(compose_cfg(tmp, diffusion_cache, *overrides), tmp / "out" / name, overrides=overrides)
        out[name] = (tmp / "out" / name, results, time.time() - started)
    return tmp, out


@pytest.mark.parametrize("name", ["diffusion_dpo", "mapo", "diffusion_sft"])
def test_a_short_run_of_each_objective_writes_a_whole_run_directory(runs, name):
    _, out = runs
    run_dir, results, seconds = out[name]
    timings = results["timings"]
    # The reference's pretraining is shared by the three runs, and the first run imports diffusers.
    assert timings["train_s"] + timings["eval_s"] < 30, timings
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["task"] == "diffusion" and saved["objective"] == name
    ev = saved["eval"]
    for key in (
        "policy/oracle_reward",
        "reference/oracle_reward",
        "win_rate",
        "implicit_acc",
        "policy/well_formed",
        "reference/well_formed",
        "policy/brightness_mean",
        "policy/ref_error",
        "ref_error_drift",
    ):
        assert isinstance(ev[key], float), key
    assert 0 <= ev["win_rate"] <= 1 and 0 <= ev["implicit_acc"] <= 1
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r.get("stage") == "train" and r.get("kind") == "step"]
    assert [r["step"] for r in train] == [5, 10, 15, 20] and "implicit_acc" in train[0] and "loss" in train[0]
    assert any(r.get("stage") == "sft" for r in lines)  # the reference's pretraining log, also when cached
    assert (run_dir / "model" / "config.json").is_file() and (run_dir / "model" / "scheduler_config.json").is_file()
    assert (run_dir / "plots" / "samples.png").is_file() and (run_dir / "plots" / "training.png").is_file()
    training = saved["training"]
    assert training["policy_forwards"] == 20
    assert training["reference_forwards"] == (20 if name == "diffusion_dpo" else 0)
    assert training["reference_in_memory"] is (name == "diffusion_dpo")  # MaPO and SFT hold no reference
    table = summary_table(saved)
    assert "oracle reward" in table and "win rate vs reference" in table and "well-formed blobs" in table


def test_the_reference_is_pretrained_once_for_every_objective(runs, diffusion_cache):
    _, out = runs
    entries = list((diffusion_cache / "diffusion").glob("unet-*"))
    assert len(entries) == 1 and {r[1]["reference_path"] for r in out.values()} == {str(entries[0])}
    assert (entries[0] / "config.json").is_file() and not list(entries[0].parent.glob(".*tmp*"))


def test_prefrun_compare_tables_diffusion_runs(runs, capsys):
    from prefrun.results.compare import main

    tmp, _ = runs
    assert main([str(tmp / "out")]) == 0
    table = capsys.readouterr().out
    for text in ("diffusion_dpo", "mapo", "diffusion_sft", "reward", "win rate", "well-formed", "ref err drift"):
        assert text in table


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, diffusion_cache):
    overrides = [*FAST, "run.checkpoint_steps=5"]
    run_dir = tmp_path / "out" / "resumed"
    metrics = run_dir / "metrics.jsonl"

    def kill_after_step_10():
        deadline = time.time() + 60
        while time.time() < deadline:
            if metrics.exists() and any(
                json.loads(line).get("step", 0) >= 10 and json.loads(line).get("stage") == "train"
                for line in metrics.read_text().splitlines()
                if line.strip()
            ):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_step_10, daemon=True)
    killer.start()
    with pytest.raises(SystemExit) as stopped:
        run(compose_cfg(tmp_path, diffusion_cache, *overrides), run_dir, overrides=overrides)
    killer.join()
    assert stopped.value.code == 75 and not (run_dir / "results.json").exists()
    results = run(compose_cfg(tmp_path, diffusion_cache, *overrides), run_dir, overrides=overrides)
    assert results["training"]["resumed_from"].startswith("checkpoint-")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r["step"] for r in rows if r.get("stage") == "train" and r.get("kind") == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # no step logged twice, none lost


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["objective=dpo"],
            "objective=dpo trains a language model; task=diffusion needs a diffusion objective: "
            "objective=<diffusion_dpo|diffusion_sft|mapo>",
        ),
        (["model=tiny"], "model=tiny is a language model; task=diffusion trains a UNet: model=<tiny_unet|sd15|sdxl>"),
        (["dataset=sort"], "dataset=sort holds text; task=diffusion needs image pairs: dataset=<blobs|pickapic>"),
        (
            ["model.prediction_type=v_prediction"],
            "model.prediction_type=v_prediction: objective=diffusion_dpo "
            "compares noise-prediction errors and assumes prediction_type=epsilon",
        ),
        (["diffusion.eval.ddim_steps=0"], "diffusion.eval.ddim_steps=0 is out of range"),
        (["dataset.min_gap=-1"], "dataset.min_gap=-1 is out of range"),
        (["model=sd15"], "model sd15 (stable-diffusion-v1-5/stable-diffusion-v1-5) is not in the local Hugging Face"),
    ],
)
def test_bad_input_is_one_line_before_anything_runs(tmp_path, monkeypatch, overrides, message):
    from prefrun.runner import task_of

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    groups = {o.split("=")[0] for o in overrides if "." not in o.split("=")[0]}  # model=tiny has no UNet sizes
    fast = [o for o in FAST if o.split(".")[0] not in groups]
    cfg = compose_cfg(tmp_path, tmp_path / "cache", *fast, *overrides)
    with pytest.raises(PrefrunError) as e:
        task_of(cfg).check(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_diffusion_objective_in_a_text_task_is_one_line(tmp_path):
    from prefrun.runner import task_of

    cfg = compose_cfg(tmp_path, tmp_path / "cache", "objective=diffusion_dpo", "logger=none")
    with pytest.raises(
        PrefrunError,
        match="^objective=diffusion_dpo trains a diffusion model on images; run it with "
        "task=diffusion objective=diffusion_dpo$",
    ):
        task_of(cfg).check(cfg)
