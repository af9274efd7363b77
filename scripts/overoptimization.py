#!/usr/bin/env python
"""Reward over-optimisation on the sort testbed: best-of-N ranked by a proxy reward model vs by the oracle.

    python scripts/overoptimization.py                        # what `make repro-overopt` runs
    python scripts/overoptimization.py --seeds 0 --prompts 32 # a quick look

Gao et al. (2023, "Scaling laws for reward model overoptimization") pick the best of N samples by a proxy
reward model and score the pick with the gold reward: as N (and so KL) grows the proxy's own score of its
pick keeps rising while the gold score of that pick rises less, flattens or falls. Here the gold is the sort
task's oracle and the proxies are ``bt`` reward models trained by ``prefrun task=reward_model`` on few or many
prompts (``--proxy-prompts``: each prompt gives one best-vs-worst pair of its K = 8 oracle-scored candidates).

For every seed: train each proxy, sample ``--n-max`` responses per held-out test prompt from the cached SFT
policy (temperature 1), score all of them with the oracle and each proxy, and compute for every N the exact
expectation over random N-subsets of the n-max samples (no Monte Carlo):

    E[gold(best-of-N by r)] = Σ_j C(j−1, N−1) / C(n, N) · gold(y_(j))      y_(j): the j-th lowest by r

(ties in r broken at random), the same for the proxy's own score of its pick, and best-of-N by the oracle
itself (the gold curve). KL(BoN‖π_SFT) ≤ log N − (N−1)/N (Beirami et al. 2024) is listed beside each N.
Writes outputs/overoptimization/{overoptimization.json, overoptimization.png} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "overoptimization"


def train_proxy(prompts: int, seed: int, steps: int, extra: list[str]) -> Path:
    """A ``bt`` reward model on ``prompts`` oracle-labelled best-vs-worst pairs; its run directory."""
    name = f"overoptimization/proxy_{prompts}"
    cmd = [
        sys.executable,
        "-m",
        "prefrun",
        "task=reward_model",
        "objective=bt",
        f"dataset.train_prompts={prompts}",
        f"train.steps={steps}",
        f"seed={seed}",
        f"experiment_name={name}",
        "logger=none",
        *extra,
    ]

    def finished() -> list[Path]:
        hits = sorted((ROOT / "outputs" / name).rglob("results.json"), key=lambda p: p.stat().st_mtime)
        wanted = {"seed": seed, "steps": steps}
        return [p.parent for p in hits if _run_key(json.loads(p.read_text())) == wanted]

    if not finished() or extra:  # a finished proxy of this seed and size is reused (extra overrides: retrain)
        print("+", " ".join(cmd[2:]), flush=True)
        subprocess.run([*cmd, "run.overwrite=true"] if extra else cmd, check=True, cwd=ROOT)
    runs = finished()
    if not runs:
        raise SystemExit(f"no finished proxy run for seed {seed} under outputs/{name}")
    return runs[-1]


def _run_key(results: dict) -> dict:
    return {"seed": results.get("seed"), "steps": (results.get("train") or {}).get("steps")}


def expected_best_of_n(rank_by: list[float], value: list[float], n: int, rng: random.Random) -> float:
    """E[value of the sample with the highest ``rank_by`` among a uniformly random n-subset] (exact)."""
    m = len(rank_by)
    order = sorted(range(m), key=lambda i: (rank_by[i], rng.random()))  # ascending, ties at random
    total = math.comb(m, n)
    return sum(math.comb(j, n - 1) / total * value[i] for j, i in enumerate(order) if j >= n - 1)


def policy_samples(seed: int, prompts: int, n_max: int, extra: list[str]) -> tuple[list[str], list[list[str]], Any]:
    """``n_max`` samples of each of the first ``prompts`` held-out prompts from the cached SFT policy."""
    from hydra import compose, initialize_config_dir

    from prefrun.data.sources import build_data
    from prefrun.generation import encode_prompts, sample, settings_from_config
    from prefrun.models.loading import base_model_path, load_model, load_tokenizer
    from prefrun.tasks.steps import sft_reference

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"seed={seed}", "logger=none", *extra])
    data = build_data(cfg.dataset, cfg.seed, eval_split="test")
    base = base_model_path(cfg.model, data.words, Path(cfg.paths.cache_dir) / "models")
    sft = sft_reference(cfg, data, base)
    model, tokenizer = load_model(sft, cfg.model, "cpu").eval(), load_tokenizer(sft, cfg.model)
    chosen = list(data.eval_prompts[:prompts])
    ids = encode_prompts(tokenizer, chosen, cfg.train.max_prompt_len)
    settings = settings_from_config(cfg.generation, n=n_max, seed=seed, top_k=0, top_p=1.0, temperature=1.0)
    samples = sample(model, tokenizer, ids, settings, stage="best-of-N: SFT samples")
    return chosen, samples.texts, data


def proxy_scores(run_dir: Path, prompts: list[str], texts: list[list[str]]) -> list[list[float]]:
    from omegaconf import OmegaConf

    from prefrun.rewards import RewardContext, build_reward

    cfg = OmegaConf.create({"name": "reward_model", "path": str(run_dir), "batch_size": 256})
    scores = build_reward(cfg, RewardContext()).score(prompts, texts)
    return scores.tolist()


def one_seed(seed: int, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    proxies = {p: train_proxy(p, seed, args.proxy_steps, extra) for p in args.proxy_prompts}
    prompts, texts, data = policy_samples(seed, args.prompts, args.n_max, extra)
    gold = [[data.reward_fn(p, y) for y in row] for p, row in zip(prompts, texts)]
    rng = random.Random(seed)
    curves: dict[str, dict[int, float]] = {"oracle": {}}
    for n in args.ns:
        curves["oracle"][n] = statistics.fmean(expected_best_of_n(g, g, n, rng) for g in gold)
    for size, run_dir in proxies.items():
        r = proxy_scores(run_dir, prompts, texts)
        on_gold, on_proxy = {}, {}
        for n in args.ns:
            on_gold[n] = statistics.fmean(expected_best_of_n(ri, gi, n, rng) for ri, gi in zip(r, gold))
            on_proxy[n] = statistics.fmean(expected_best_of_n(ri, ri, n, rng) for ri in r)
        curves[f"proxy_{size}: oracle reward"] = on_gold
        curves[f"proxy_{size}: proxy reward"] = on_proxy
        results = json.loads((run_dir / "results.json").read_text())
        curves[f"proxy_{size}: held-out pair accuracy"] = {0: results["eval"].get("reward_model/accuracy")}
    return {"seed": seed, "curves": curves, "proxy_runs": {str(k): str(v) for k, v in proxies.items()}}


def summarise(per_seed: list[dict], ns: list[int]) -> dict[str, dict[int, tuple[float, float]]]:
    names = per_seed[0]["curves"]
    table: dict[str, dict[int, tuple[float, float]]] = {}
    for name in names:
        points = per_seed[0]["curves"][name]
        table[name] = {}
        for n in points:
            values = [s["curves"][name][n] for s in per_seed if s["curves"][name].get(n) is not None]
            if values:
                table[name][n] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return table


def plot(table: dict, ns: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in table.items():
        if "accuracy" in name or "proxy reward" in name:
            continue
        xs = [math.log(n) - (n - 1) / n for n in ns]
        means = [points[n][0] for n in ns]
        stds = [points[n][1] for n in ns]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"best-of-N by {name.split(':')[0]}")
    ax.set_xlabel("KL bound of best-of-N: log N − (N−1)/N  (N = " + ", ".join(map(str, ns)) + ")")
    ax.set_ylabel("oracle reward of the pick")
    ax.set_title("Sort testbed: best-of-N by proxy RMs vs by the oracle")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--prompts", type=int, default=128, help="held-out test prompts")
    parser.add_argument("--n-max", type=int, default=32, help="samples per prompt (the largest N)")
    parser.add_argument("--proxy-prompts", default="32,6400", help="training prompts of each proxy RM")
    parser.add_argument("--proxy-steps", type=int, default=200)
    args, extra = parser.parse_known_args(argv)
    args.proxy_prompts = [int(x) for x in args.proxy_prompts.split(",")]
    args.ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= args.n_max]
    per_seed = [one_seed(int(s), args, extra) for s in args.seeds.split(",")]
    table = summarise(per_seed, args.ns)
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["scripts/overoptimization.py", *(argv or sys.argv[1:])]), "per_seed": per_seed}
    report["table"] = {name: {str(n): v for n, v in pts.items()} for name, pts in table.items()}
    (OUT / "overoptimization.json").write_text(json.dumps(report, indent=2))
    plot(table, args.ns, OUT / "overoptimization.png")
    head = f"{'N':>4} {'KL bound':>9} " + " ".join(f"{name[:28]:>30}" for name in table if "accuracy" not in name)
    print(head)
    for n in args.ns:
        cells = " ".join(
            f"{table[name][n][0]:>22.3f} ± {table[name][n][1]:.3f}" for name in table if "accuracy" not in name
        )
        print(f"{n:>4} {math.log(n) - (n - 1) / n:>9.3f} {cells}")
    for name in table:
        if "accuracy" in name:
            mean, std = table[name][0]
            print(f"{name}: {mean:.3f} ± {std:.3f}")
    print(f"written {OUT / 'overoptimization.json'} and {OUT / 'overoptimization.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
