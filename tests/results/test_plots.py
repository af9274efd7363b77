"""Figures (prefrun.results.plots and .figure_data): a sweep's reward-vs-KL points are the mean ± std
over seeds of each variant, each evaluator's headline metric and interval are found generically, and every
PNG written opens, has a size and is not blank."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from prefrun.results.compare import main as compare
from prefrun.results.figure_data import headline_metrics, interval, load_runs, stage_curves, sweep_points, variants
from prefrun.results.plots import plot_run

PIL = pytest.importorskip("PIL.Image")

# (objective, beta) -> per-seed (kl, oracle reward, judge win rate)
SWEEP = {
    ("dpo", 0.1): [(0.9, 0.80, 0.60), (1.1, 0.84, 0.64), (1.0, 0.82, 0.62)],
    ("dpo", 1.0): [(0.2, 0.70, 0.52), (0.3, 0.72, 0.55), (0.25, 0.74, 0.50)],
    ("lipo", 0.5): [(0.5, 0.86, 0.70), (0.6, 0.88, 0.72), (0.4, 0.87, 0.66)],
}


def metrics_rows(seed: int, steps: int = 20, stage: str = "train") -> list[dict]:
    rows = [{"stage": "sft", "step": s, "kind": "step", "loss": 3.0 / s} for s in (100, 200)]
    for step in range(2, steps + 1, 2):
        rows.append(
            {
                "stage": stage,
                "step": step,
                "kind": "step",
                "loss": 0.7 - 0.01 * step - 0.001 * seed,
                "rewards/margins": 0.05 * step,
                "logps/chosen": -10 + 0.02 * step,
                "logps/rejected": -12 - 0.1 * step,
            }
        )
    rows.append({"stage": stage, "step": steps, "kind": "summary", "train_runtime": 5.0})
    return rows


def write_sweep(root: Path) -> None:
    for (objective, beta), seeds in SWEEP.items():
        for seed, (kl, reward, judge) in enumerate(seeds):
            run_dir = root / "sort" / "tiny" / objective / f"objective.beta={beta}" / f"seed={seed}"
            run_dir.mkdir(parents=True)
            results = {
                "experiment": "study",
                "dataset": "sort",
                "model": "tiny",
                "objective": objective,
                "hparams": {"beta": beta},
                "train": {"lr": 1e-5, "steps": 20},
                "seed": seed,
                "variant": f"objective.beta={beta}",
                "eval": {
                    "policy/oracle_reward": reward,
                    "reference/oracle_reward": 0.6,
                    "win_rate": 0.5 + reward / 10,
                    "kl": kl,
                    "judge/win_rate": judge,
                    "judge/win_rate_low": judge - 0.05,
                    "judge/win_rate_high": judge + 0.04,
                    "judge/source": "tiny",
                },
            }
            (run_dir / "results.json").write_text(json.dumps(results))
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics_rows(seed)))


def assert_png_drawn(path: Path, min_size: tuple[int, int] = (400, 300)) -> None:
    image = PIL.open(path).convert("L")
    assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
    pixels = list(image.getdata())
    assert statistics.pvariance(pixels) > 50, f"{path} looks blank"
    assert sum(p < 128 for p in pixels) > 0.002 * len(pixels), f"{path} has almost no ink"


def test_one_point_per_variant_with_mean_and_std_over_seeds(tmp_path):
    write_sweep(tmp_path)
    y_key, x_key, points = sweep_points(variants(load_runs(tmp_path)))
    assert (y_key, x_key) == ("policy/oracle_reward", "kl")
    by_label = {(p["objective"], p["label"]): p for p in points}
    # dpo's β varies across its runs; lipo has one β, named by its run directory's override.
    assert set(by_label) == {("dpo", "beta=0.1"), ("dpo", "beta=1.0"), ("lipo", "beta=0.5")}
    for (objective, beta), seeds in SWEEP.items():
        point = by_label[(objective, f"beta={beta}")]
        kls, rewards = [s[0] for s in seeds], [s[1] for s in seeds]
        assert point["x"] == pytest.approx(sum(kls) / 3) and point["y"] == pytest.approx(sum(rewards) / 3)
        assert point["x_err"] == pytest.approx(statistics.stdev(kls))
        assert point["y_err"] == pytest.approx(statistics.stdev(rewards))
        assert point["seeds"] == 3


def test_without_an_oracle_the_figure_falls_back_to_a_reward_source_or_a_win_rate(tmp_path):
    run = {"objective": "dpo", "hparams": {}, "eval": {"judge/win_rate": 0.6, "reward/kl": 0.3}}
    y_key, x_key, points = sweep_points([{"objective": "dpo", "label": "dpo", "runs": [(tmp_path, run)]}])
    assert (y_key, x_key) == ("*/win_rate", "*/kl") and (points[0]["x"], points[0]["y"]) == (0.3, 0.6)


def test_each_evaluator_has_a_headline_and_its_interval_is_read_in_either_form():
    results = [
        {
            "eval": {
                "policy/oracle_reward": 0.9,
                "win_rate": 0.6,
                "kl": 0.2,
                "judge/win_rate": 0.7,
                "judge/lc_win_rate": 0.68,
                "preference/accuracy": 0.8,
                "reward/policy_reward": 1.5,
            }
        }
    ]
    assert headline_metrics(results) == {
        "oracle": "win_rate",
        "judge": "judge/win_rate",
        "preference": "preference/accuracy",
        "reward": "reward/policy_reward",
    }
    assert interval({"judge/win_rate_ci": [0.6, 0.8]}, "judge/win_rate") == (0.6, 0.8)
    assert interval({"judge/win_rate_low": 0.6, "judge/win_rate_high": 0.8}, "judge/win_rate") == (0.6, 0.8)
    assert interval({"judge/win_rate": 0.7}, "judge/win_rate") is None


def test_curriculum_stages_are_laid_end_to_end_and_the_sft_stage_is_left_out():
    rows = metrics_rows(0, steps=4, stage="stage1") + metrics_rows(0, steps=4, stage="stage2")
    assert [step for step, _ in stage_curves(rows, "loss")] == [2, 4, 6, 8]


def test_compare_plot_draws_every_figure_of_a_sweep(tmp_path, capsys):
    write_sweep(tmp_path)
    assert compare([str(tmp_path), "--plot"]) == 0
    out = capsys.readouterr().out
    names = {"reward_vs_kl.png", "training_curves.png", "evaluators.png"}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == names
    for name in names:
        assert f"figure: {tmp_path / 'plots' / name}" in out
        assert_png_drawn(tmp_path / "plots" / name)


def test_a_run_draws_its_training_curves_and_logs_them_to_an_active_wandb_run(tmp_path, monkeypatch):
    import wandb

    write_sweep(tmp_path)
    run_dir = next(d for d, _ in load_runs(tmp_path))
    logged = []
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb, "log", lambda data: logged.append(data))
    monkeypatch.setattr(wandb, "Image", lambda path: ("image", path))
    assert plot_run(run_dir) == [run_dir / "plots" / "training.png"]
    assert_png_drawn(run_dir / "plots" / "training.png")
    assert logged == [{"plots/training": ("image", str(run_dir / "plots" / "training.png"))}]


def test_a_run_without_training_metrics_draws_nothing(tmp_path):
    assert plot_run(tmp_path) == []
    assert not (tmp_path / "plots").exists()
