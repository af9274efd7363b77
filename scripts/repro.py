"""Reproduce a study: choose each variant's hyperparameters on validation prompts, then run seeds on test.

    python scripts/repro.py lipo_vs_dpo        # what `make repro-lipo` runs
    python scripts/repro.py zoo --only dpo,ipo # a subset of the study's variants

Reads the experiment's `study` block (conf/experiment/<name>.yaml): for every variant, a multirun over
its grid on eval.split=validation (seed 0), the best point by `select_by`, then a multirun of that
point over `seeds` on the test prompts; finally prefrun-compare over the test runs, with the figures
(outputs/<name>/plots: reward vs KL, training curves, evaluators) and those of the grid search
(outputs/<name>_select/plots: one point per grid point).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def prefrun_multirun(*overrides: str) -> None:
    cmd = [sys.executable, "-m", "prefrun", "-m", *overrides]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def best_point(select_root: Path, grid: dict, metric: str) -> tuple[list[str], dict]:
    keys = list(grid)
    scored = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = [f"{k}={v}" for k, v in zip(keys, values)]
        hits = [
            json.loads(p.read_text())
            for p in select_root.rglob("results.json")
            if all(part in p.parent.parent.name.split(",") for part in point)
        ]
        if hits:
            scored.append((hits[0]["eval"][metric], point))
    best = max(scored)
    return best[1], {"candidates": [(s, p) for s, p in scored], "chosen": best[1]}


def main(name: str, extra: list[str], only: list[str] | None = None) -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        study = OmegaConf.to_container(compose("config", overrides=[f"experiment={name}"]).study, resolve=True)
    out = Path("outputs")
    report = {}
    for variant, spec in study["variants"].items():
        if only and variant not in only:
            continue
        base = [f"experiment={name}", *spec["overrides"], *extra]
        chosen: list[str] = []
        if spec["grid"]:
            sel_name = f"{name}_select/{variant}"
            grid_args = [f"{k}={','.join(str(v) for v in vs)}" for k, vs in spec["grid"].items()]
            prefrun_multirun(*base, *grid_args, "eval.split=validation", "seed=0", f"experiment_name={sel_name}")
            chosen, report[variant] = best_point(out / sel_name, spec["grid"], study["select_by"])
        seeds = ",".join(str(s) for s in study["seeds"])
        prefrun_multirun(*base, *chosen, f"seed={seeds}", f"experiment_name={name}/{variant}")
    (out / name).mkdir(parents=True, exist_ok=True)
    selection = out / name / "selection.json"
    previous = json.loads(selection.read_text()) if only and selection.exists() else {}
    selection.write_text(json.dumps({**previous, **report}, indent=2))
    print(json.dumps(report, indent=2))
    compare = "import sys; from prefrun.results.compare import main; sys.exit(main())"
    subprocess.run([sys.executable, "-c", compare, str(out / name), "--plot"], check=True, cwd=ROOT)
    if (out / f"{name}_select").is_dir():  # the grid search: reward vs KL over each variant's grid
        from prefrun.results.plots import plot_sweep

        for path in plot_sweep(out / f"{name}_select"):
            print(f"figure: {path}")


if __name__ == "__main__":
    # python scripts/repro.py NAME [overrides...] [--only variant,variant]
    args = sys.argv[2:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1].split(",")
        args = args[:i] + args[i + 2 :]
    main(sys.argv[1], args, only)
