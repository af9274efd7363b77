#!/usr/bin/env python
"""PAL on sort_plural: PAL-B with 2 prototypes vs 1 (Bradley–Terry on the same features), new users from N pairs.

    python scripts/pal_study.py                          # what `make repro-pal` runs: 3 seeds
    python scripts/pal_study.py --seeds 0 --steps 50     # a quick look
    python scripts/pal_study.py -- model.path=<dir>      # extra prefrun overrides after --

For every seed, in one process (prefrun.runner.run, as the CLI runs it; each run its own directory under
outputs/pal_study/): ``task=reward_model objective=pal_b dataset=sort_plural`` with objective.prototypes=2 and
=1, then, from the 2-prototype run, ``reward_model.adapt_user=new reward_model.adapt_pairs=N`` for every N
(the 4 new users adapted from their first N comparisons, only their mixture logits trained). Prints and writes
(outputs/pal_study/pal_study.json) mean ± std over seeds of: the seen users' mean per-user accuracy, the
mixture purity, the new users' accuracy before adaptation (the users' mean mixture) and after it per N.
Each run is the same as its CLI command, printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "pal_study"


def run_one(name: str, overrides: list[str]) -> dict:
    from prefrun.runner import run

    run_dir = OUT / name
    if (run_dir / "results.json").is_file():  # finished before: a rerun of the study reuses it
        return json.loads((run_dir / "results.json").read_text())
    print("+ prefrun " + " ".join(overrides) + f" hydra.run.dir={run_dir}", flush=True)
    with initialize_config_dir(str(ROOT / "prefrun" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run(cfg, run_dir, overrides=overrides)


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pairs", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("extra", nargs="*", help="more prefrun overrides (after --)")
    args = parser.parse_args()
    common = ["task=reward_model", "objective=pal_b", "dataset=sort_plural", "logger=none", "hardware.threads=1",
              f"paths.cache_dir={ROOT / 'outputs' / '.cache'}", *args.extra]  # fmt: skip
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(float(value))

    for seed in args.seeds:
        for k in (2, 1):
            r = run_one(f"k{k}/seed={seed}", [*common, f"objective.prototypes={k}", f"train.steps={args.steps}",
                                              f"seed={seed}"])  # fmt: skip
            ev = r["eval"]
            add(f"K_p={k}: seen users' accuracy", ev["reward_model/seen_user_accuracy"])
            add(f"K_p={k}: seen users' min accuracy", ev["reward_model/seen_user_accuracy_min"])
            add(f"K_p={k}: mixture purity", ev["reward_model/purity"])
            add(f"K_p={k}: new users, no adaptation (mean mixture)", ev["reward_model/unseen_user_accuracy"])
        base = OUT / f"k2/seed={seed}"
        for n in args.pairs:
            adapt = [f"reward_model.from='{base}'", "reward_model.adapt_user=new", f"reward_model.adapt_pairs={n}"]
            r = run_one(f"k2_adapt{n}/seed={seed}", [*common, *adapt, f"seed={seed}"])
            add(f"K_p=2: new users adapted from N={n}", r["eval"]["reward_model/adapted_user_accuracy"])
            add(f"K_p=2: new users' purity, N={n}", r["eval"]["reward_model/adapted_purity"])
    table = {key: {"mean_std": mean_std(v), "values": v} for key, v in rows.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pal_study.json").write_text(json.dumps({"seeds": args.seeds, "steps": args.steps, "rows": table}, indent=2))
    print(f"\nPAL-B on sort_plural, {len(args.seeds)} seeds (mean ± std over seeds)")
    for key, v in table.items():
        print(f"  {key:52} {v['mean_std']}")


if __name__ == "__main__":
    main()
