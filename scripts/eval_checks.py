"""Measure the judge evaluator on the sort testbed, where the oracle gives the truth to compare against.

    .venv/bin/python scripts/eval_checks.py --run outputs/default/sort/tiny/dpo/default/seed=0
    .venv/bin/python scripts/eval_checks.py            # trains the default run first (eval=none), then measures

(a) ``eval=judge`` with the oracle as the judge (reward=oracle: an exact preference) against ``eval=oracle``'s win
    rate on the same trained policy: the oracle's win rate should lie inside the judge's 95% interval (the two
    evaluators sample with different settings: eval.oracle's 24 tokens in one batch, the generation block's).
(b) A judge with a first-position bias b (prefrun.evaluation.simulated: P(first wins) = σ(s·Δr + b), Δr the oracle
    reward gap) on the policy's and the reference's samples, under each swap protocol: ``both`` and ``random``
    should report the true win rate (what the unbiased judge reports on average), ``fixed`` should be off by the
    bias. Also the simulation of the research notes (Δ ~ N(gap, 1), 200 prompts, many replicates), whose table
    reads true 0.602, fixed 0.779, random 0.588, both 0.589 at b = 1.
(c) A judge that favours longer answers (γ·tanh(Δchars/ℓ) added to its logit) and the policy's answers padded
    with 0–30 spaces (their oracle reward is unchanged): the raw win rate rises, the length-controlled win rate
    should stay within 0.02 of the true, length-neutral win rate; measured over several padding draws, since
    a chance correlation between padding and quality moves the LC estimate by about 1/√n.

Prints the figures and writes them to outputs/eval_checks/eval_checks.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prefrun.config import CONF_DIR
from prefrun.data.sources import build_data
from prefrun.data.synthetic import oracle_reward
from prefrun.evaluation import EVALUATORS
from prefrun.evaluation.base import EvalInputs
from prefrun.evaluation.judge import judged_win_rate
from prefrun.evaluation.sampling import sample_both, settings_for
from prefrun.evaluation.simulated import SimulatedJudge
from prefrun.generation import settings_from_config
from prefrun.models.loading import load_model, load_tokenizer
from prefrun.objectives.config import build_objective
from prefrun.rewards import RewardContext, build_reward

OUT = Path("outputs/eval_checks")  # --out
SWAPS = ("fixed", "random", "both")


def trained_policy(run: str | None, overrides: list[str], out: Path) -> tuple[Any, Path, str]:
    """(config, policy directory, reference path) of a finished run; trains the default run when none is given."""
    if run is None:
        from prefrun.runner import run as run_task

        run_dir = out / "policy_run"
        cfg = compose_config(["eval=none", "logger=none", "run.save_model=true", *overrides])
        if not (run_dir / "results.json").exists():
            run_task(cfg, run_dir, overrides=overrides)
        run = str(run_dir)
    run_dir = Path(run)
    results = json.loads((run_dir / "results.json").read_text())
    cfg = OmegaConf.load(run_dir / "config.yaml")
    if not (run_dir / "model").is_dir():
        sys.exit(f"eval_checks: {run_dir} holds no saved policy (model/); rerun it with run.save_model=true")
    return cfg, run_dir / "model", results["reference_path"]


def compose_config(overrides: list[str]) -> Any:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def inputs_for(cfg: Any, policy_dir: Path, reference_path: str, n_prompts: int) -> EvalInputs:
    dataset = OmegaConf.merge(cfg.dataset, {"eval_prompts": max(n_prompts, int(cfg.dataset.eval_prompts))})
    data = build_data(dataset, cfg.seed, eval_split="test")
    policy = load_model(str(policy_dir), cfg.model, "cpu").eval()
    reference = load_model(reference_path, cfg.model, "cpu").eval()
    oracle = build_reward(OmegaConf.create({"name": "oracle"}), RewardContext(oracle=oracle_reward))
    return EvalInputs(
        policy=policy,
        tokenizer=load_tokenizer(str(policy_dir), cfg.model),
        reference=lambda: reference,
        data=data,
        objective=build_objective(cfg.objective),
        reward=lambda: oracle,
        generation=settings_from_config(cfg.get("generation")),
        device="cpu",
        seed=int(cfg.seed),
        max_prompt_len=int(cfg.train.max_prompt_len),
        max_response_len=int(cfg.train.max_response_len),
    )


def check_a(inputs: EvalInputs, prompts: int) -> dict[str, Any]:
    oracle_settings = OmegaConf.merge(compose_config([]).eval.oracle, {"prompts": prompts})  # the default's
    oracle = EVALUATORS.get("oracle")(inputs, oracle_settings).metrics
    judge = EVALUATORS.get("judge")(inputs, OmegaConf.create({"prompts": prompts, "seed": 1234})).metrics
    inside = judge["win_rate_low"] <= oracle["win_rate"] <= judge["win_rate_high"]
    return {"oracle_win_rate": oracle["win_rate"], "judge": judge, "oracle_inside_judge_interval": inside}


def texts(inputs: EvalInputs, n_prompts: int) -> tuple[list[str], list[str], list[str]]:
    """Held-out prompts and one policy and one reference sample of each (T = 1, 24 tokens, seed 1234)."""
    prompts = list(inputs.data.eval_prompts[:n_prompts])
    sampling = settings_for(inputs, n=1, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=24, seed=1234)
    ref, pol = sample_both(inputs, prompts, sampling, "eval_checks")
    return prompts, [t[0] for t in pol.texts], [t[0] for t in ref.texts]


def check_b(prompts: list[str], policy: list[str], reference: list[str], scale: float) -> dict[str, Any]:
    out: dict[str, Any] = {"scale": scale, "prompts": len(prompts)}
    for bias in (0.0, 1.0):
        row: dict[str, Any] = {}
        for swap in SWAPS:
            judge = SimulatedJudge(oracle_reward, scale=scale, position_bias=bias, swap=swap, seed=0)
            got = judged_win_rate(judge, prompts, policy, reference, n_boot=2000, seed=0)
            row[swap] = {k: got[k] for k in ("win_rate", "win_rate_low", "win_rate_high") if k in got}
            if "consistency" in got:
                row[swap]["consistency"] = got["consistency"]
        row["true"] = float(judge.true_preferences(prompts, policy, reference).mean())
        out[f"b={bias:g}"] = row
    return out


def research_table(reps: int) -> dict[str, Any]:
    """The research notes' simulation: Δ ~ N(gap, 1) on 200 prompts, the judge P(first) = σ(Δ + b)."""
    z = np.random.default_rng(0).normal(size=200_000)
    lo, hi = 0.0, 2.0
    for _ in range(40):  # the gap whose true win rate E σ(Δ) is 0.602
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(mid + z)))) < 0.602 else (lo, mid)
    table = {}
    for bias, gap in ((0.0, lo), (1.0, 0.0), (1.0, lo)):
        rng = np.random.default_rng(1)
        runs: dict[str, list[float]] = {"true": [], **{s: [] for s in SWAPS}}
        for rep in range(reps):
            delta = rng.normal(gap, 1.0, 200)
            policy, reference, prompts = [f"{d:+.6f}" for d in delta], ["+0"] * 200, list(range(200))
            runs["true"].append(float(np.mean(1 / (1 + np.exp(-delta)))))
            for swap in SWAPS:
                judge = SimulatedJudge(lambda _, r: float(r), position_bias=bias, swap=swap, seed=rep)
                runs[swap].append(judged_win_rate(judge, prompts, policy, reference, n_boot=1, seed=0)["win_rate"])
        table[f"b={bias:g}, gap={gap:.3f}"] = {k: (float(np.mean(v)), float(np.std(v))) for k, v in runs.items()}
    return table


def check_c(prompts: list[str], policy: list[str], reference: list[str], scale: float, seeds: int) -> dict[str, Any]:
    """The padded policy under ``seeds`` padding draws: the LC error of each (chance correlation between the
    padding and the answers' quality moves it by about 1/√n), their mean (the estimator's own bias)."""
    judge = SimulatedJudge(
        oracle_reward, scale=scale, length_bias=1.5, length_scale=10.0, swap="both", verdicts="probability"
    )
    true = float(judge.true_preferences(prompts, policy, reference).mean())
    plain = judged_win_rate(judge, prompts, policy, reference, n_boot=2000, seed=0)
    keys = ("win_rate", "win_rate_low", "win_rate_high", "lc_win_rate", "policy_chars", "reference_chars")
    draws = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        padded = [t + " " * int(k) for t, k in zip(policy, rng.integers(0, 31, len(policy)))]
        assert all(oracle_reward(p, a) == oracle_reward(p, b) for p, a, b in zip(prompts, policy, padded))
        verbose = judged_win_rate(judge, prompts, padded, reference, n_boot=2000 if seed == 0 else 1, seed=0)
        draws.append({k: verbose[k] for k in keys} | {"lc_error": verbose["lc_win_rate"] - true})
    errors = np.array([d["lc_error"] for d in draws])
    return {
        "prompts": len(prompts),
        "true": true,
        "unpadded": {k: plain[k] for k in keys},
        "padded": draws[0],
        "lc_error": float(errors[0]),
        "lc_within_0.02": bool(abs(errors[0]) <= 0.02),
        "padding_seeds": {
            "raw_win_rate_mean": float(np.mean([d["win_rate"] for d in draws])),
            "lc_errors": errors.tolist(),
            "lc_error_mean": float(errors.mean()),
            "lc_error_sd": float(errors.std(ddof=1)) if len(errors) > 1 else 0.0,
            "within_0.02": float(np.mean(np.abs(errors) <= 0.02)),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished run directory with its saved policy (default: train the default run)")
    parser.add_argument("--prompts", type=int, default=256, help="held-out prompts of (a) and (b)")
    parser.add_argument("--lc-prompts", type=int, default=2000, help="held-out prompts of (c)")
    parser.add_argument("--scale", type=float, default=10.0, help="s: the simulated judges' logit per unit of reward")
    parser.add_argument("--reps", type=int, default=500, help="replicates of the research notes' simulation")
    parser.add_argument("--padding-seeds", type=int, default=10, help="padding draws of (c)")
    parser.add_argument("--out", default=str(OUT), help="where the JSON (and a trained run) go")
    parser.add_argument("overrides", nargs="*", help="config overrides of the run trained when --run is not given")
    args = parser.parse_args(argv)
    started = time.time()
    out = Path(args.out)
    cfg, policy_dir, reference_path = trained_policy(args.run, args.overrides, out)
    inputs = inputs_for(cfg, policy_dir, reference_path, max(args.prompts, args.lc_prompts))
    report: dict[str, Any] = {"policy": str(policy_dir), "reference": reference_path}
    report["a"] = check_a(inputs, args.prompts)
    prompts, policy, reference = texts(inputs, args.lc_prompts)
    n = args.prompts
    report["b"] = check_b(prompts[:n], policy[:n], reference[:n], args.scale)
    report["b_research_table"] = research_table(args.reps)
    report["c"] = check_c(prompts, policy, reference, args.scale, args.padding_seeds)
    report["seconds"] = time.time() - started
    print_report(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_checks.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"written: {out / 'eval_checks.json'}")
    return 0


def print_report(r: dict[str, Any]) -> None:
    a, j = r["a"], r["a"]["judge"]
    print(f"policy {r['policy']}  reference {r['reference']}")
    print(
        f"(a) eval=oracle win rate {a['oracle_win_rate']:.3f}; eval=judge (reward=oracle) {j['win_rate']:.3f} "
        f"[{j['win_rate_low']:.3f}, {j['win_rate_high']:.3f}], LC {j['lc_win_rate']:.3f}: "
        f"{'inside' if a['oracle_inside_judge_interval'] else 'OUTSIDE'} the interval"
    )
    b = r["b"]
    print(f"(b) first-position bias, judge P(first) = σ({b['scale']:g}·Δr + b), {b['prompts']} prompts")
    for key in ("b=0", "b=1"):
        row = b[key]
        cells = "  ".join(
            f"{s} {row[s]['win_rate']:.3f} [{row[s]['win_rate_low']:.3f}, {row[s]['win_rate_high']:.3f}]" for s in SWAPS
        )
        consistency = row["both"].get("consistency", math.nan)
        print(f"    {key}: true {row['true']:.3f}  {cells}  (both: consistency {consistency:.3f})")
    print("    research-notes simulation (mean ± sd over replicates):")
    for key, row in r["b_research_table"].items():
        print("      " + key + ": " + "  ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in row.items()))
    c, spread = r["c"], r["c"]["padding_seeds"]
    print(
        f"(c) length-biased judge, policy padded with 0-30 spaces, {c['prompts']} prompts: true {c['true']:.3f}; "
        f"unpadded raw {c['unpadded']['win_rate']:.3f} LC {c['unpadded']['lc_win_rate']:.3f}; "
        f"padded (draw 0) raw {c['padded']['win_rate']:.3f} LC {c['padded']['lc_win_rate']:.3f} "
        f"(LC − true {c['lc_error']:+.3f}: {'within' if c['lc_within_0.02'] else 'NOT within'} 0.02)"
    )
    print(
        f"    over {len(spread['lc_errors'])} padding draws: raw {spread['raw_win_rate_mean']:.3f}, LC − true "
        f"{spread['lc_error_mean']:+.3f} ± {spread['lc_error_sd']:.3f} (sd), within 0.02 in "
        f"{spread['within_0.02']:.0%} of draws: " + " ".join(f"{e:+.3f}" for e in spread["lc_errors"])
    )
    print(f"{r['seconds']:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
