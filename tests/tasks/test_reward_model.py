"""task=reward_model end to end on the micro testbed: a saved, loadable reward model with held-out figures, used
afterwards by the reward evaluator of another run; and the one-line refusals that leave nothing finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_cfg

from prefrun.errors import PrefrunError
from prefrun.runner import run, summary_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MICRO = [
    "logger=none",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_heads=2",
    "sft.enabled=false",  # the backbone: the micro model itself (the SFT stage has its own tests)
    "dataset.train_prompts=64",
    "dataset.sft_records=256",
    "dataset.eval_prompts=16",
    "train.batch_size=8",
    "train.logging_steps=1",
]


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("rm")
    overrides = ["task=reward_model", "objective=bt", "train.steps=4", *MICRO]
    run_dir = tmp / "out" / "rm"
    return tmp, run_dir, run(compose_cfg(tmp, *overrides), run_dir, overrides=overrides)


def test_a_reward_model_run_saves_a_loadable_classifier_and_its_held_out_figures(rm_run):
    _, run_dir, results = rm_run
    assert json.loads((run_dir / "results.json").read_text())["task"] == "reward_model"
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(run_dir / "model")
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
    assert config.prefrun_reward == {"render": "records", "max_prompt_len": 128, "max_response_len": 128}
    ev = results["eval"]
    assert ev["reward_model/lists"] == 16 and ev["reward_model/k"] == 8  # the sort task's held-out K = 8 lists
    assert 0 <= ev["reward_model/accuracy"] <= 1 and 0 <= ev["reward_model/ece"] <= 1
    assert -1 <= ev["reward_model/spearman"] <= 1 and ev["reward_model/spearman_vs"] == "oracle"
    assert results["training"]["forwards"] == 4 and results["model_dir"]["bytes"] > 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r.get("stage") == "train" and r.get("kind") == "step"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and "rewards/margins" in train[0]
    from prefrun.results.compare import load_results, table
    from prefrun.results.plots import REWARD_CURVES, curves_for

    assert (run_dir / "plots" / "training.png").is_file() and curves_for(lines) is REWARD_CURVES  # rewards, not logps
    header, rows = table(load_results(run_dir))
    assert {"RM acc", "RM ECE", "RM ρ"} <= set(header) and rows[0][header.index("objective")] == "bt"
    table = summary_table(results)
    for label in ("pair accuracy", "calibration (ECE, 10 bins)", "Spearman vs oracle (16 lists)", "use it: reward="):
        assert label in table
    assert f"reward=reward_model reward.path={run_dir}" in table


def test_the_reward_model_run_feeds_another_runs_reward_evaluator(rm_run):
    tmp, rm_dir, _ = rm_run
    policy = ["train.steps=1", "eval=none", *MICRO]
    run(compose_cfg(tmp, *policy), tmp / "out" / "runs" / "policy", overrides=policy)
    # the folder holds both runs: the reward model's own run is no policy to evaluate, and is skipped
    evaluate = [
        "task=evaluate",
        f"runs={tmp}/out",
        "eval=[reward]",
        "eval.reward.prompts=8",
        "reward=reward_model",
        f"reward.path={rm_dir}",
        *MICRO,
    ]
    results = run(compose_cfg(tmp, *evaluate), tmp / "out" / "evaluate" / "1", overrides=evaluate)
    assert list(results["runs"]) == [str(tmp / "out" / "runs" / "policy")]
    metrics = json.loads((tmp / "out" / "runs" / "policy" / "eval" / "reward.json").read_text())["metrics"]
    assert metrics["reward/source"] == "reward_model" and metrics["reward/comparisons"] == 8
    assert metrics["reward/nan_policy"] == 0 and isinstance(metrics["reward/policy_reward"], float)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task=reward_model", "objective=dpo", "dataset.train_prompts=8"],
            "objective=dpo trains a policy; task=reward_model needs a reward-model objective: "
            "objective=<bt|pal_a|pal_b|pl_rm>",
        ),
        (
            ["objective=bt", "dataset.train_prompts=8"],
            "objective=bt trains a reward model, not a policy; run it with task=reward_model objective=bt",
        ),
        (
            ["task=reward_model", "objective=pl_rm", "dataset.k=1", "dataset.train_prompts=8"],
            "objective pl_rm needs lists of at least 2 responses; dataset sort row 0 has 1; drop short lists with "
            "dataset.min_k",
        ),
        (
            ["task=reward_model", "objective=bt", "dataset=kto_mix", f"dataset.path={FIXTURES / 'kto_mix.jsonl'}"],
            "dataset kto_mix holds unpaired feedback (prompt, completion, label), which compares nothing; a reward "
            "model trains on pairs or ranked lists: use a pairwise or list dataset (dataset=hh_rlhf, sort, ...)",
        ),
    ],
    ids=["policy_objective", "reward_objective_for_a_policy", "short_lists", "unpaired"],
)
def test_wrong_objectives_and_data_are_one_line_errors_and_nothing_looks_finished(tmp_path, overrides, message):
    with pytest.raises(PrefrunError) as e:
        run(compose_cfg(tmp_path, *overrides, "logger=none"), tmp_path / "run")
    assert str(e.value) == message
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_a_killed_reward_model_run_resumes_with_every_step_once(tmp_path):
    """SIGKILL mid-training (no warning), then the same command: it resumes from the last complete checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefrun.runtime.checkpoints import last_complete_checkpoint

    steps = 40
    run_dir = tmp_path / "rm"
    command = [
        sys.executable, "-m", "prefrun", "task=reward_model", "objective=bt", f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={run_dir}", f"train.steps={steps}",
        "run.checkpoint_steps=4", *MICRO,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        found = last_complete_checkpoint(run_dir / "checkpoints")
        if found is not None and int(found.name.split("-")[1]) >= 8:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (run_dir / "results.json").exists()
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[train] step 4/40 " not in resumed.stdout  # it started from its checkpoint (step ≥ 8), not from 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r.get("stage") == "train" and r["kind"] == "step"] == list(range(1, steps + 1))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["task"] == "reward_model" and 0 <= results["eval"]["reward_model/accuracy"] <= 1
