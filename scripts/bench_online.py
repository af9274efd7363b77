#!/usr/bin/env python
"""make bench-online: prefrun's online loop against TRL's online trainers, side by side on CPU.

    python scripts/bench_online.py                 # 3 repeats of both rows; writes outputs/bench/bench-online.json
    python scripts/bench_online.py --quick         # 3 steps, 1 repeat: a smoke test of the script itself
    python scripts/bench_online.py --rows rloo --repeats 5

Rows (ratios are prefrun over its baseline):
  online_dpo  prefrun task=online objective=dpo online.k=2 vs TRL 1.16's experimental OnlineDPOTrainer with the
              sort oracle as its reward function: optimizer steps/s, and peak RSS.
  rloo        prefrun task=online objective=rloo online.k=8 vs TRL RLOOTrainer(num_generations=8): steps/s.

Both sides start from the same cached SFT model (the embedded default's reference: the tiny model on the sort
task), train on the same training prompts (train.batch_size prompts per step), sample K responses per prompt of
at most max_new_tokens tokens at temperature 1 (top-k and top-p off), take the same number of optimizer steps
with the same lr, constant schedule, AdamW and fp32, and hold the policy and a reference model in memory. Each
measurement is one fresh child process (so its peak RSS is its own); steps/s is the Trainer's own
``train_runtime`` (sampling, scoring, reference and policy passes, optimizer; the first step included on both
sides). Medians over repeats; within a repeat the two sides alternate which goes first. prefrun's per-step time
is split by its round metrics (sampling, scoring, log-probs of policy and reference; the rest is the training
forward/backward and the optimizer).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import entry, machine, median, print_table, quiet  # scripts/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench"
CACHE = ROOT / "outputs" / ".cache"
ROWS = ("online_dpo", "rloo")


@dataclass(frozen=True)
class Sizes:
    steps: int = 8  # optimizer steps per run (the first included: TRL and prefrun both time it)
    batch: int = 8  # prompts per step
    max_new_tokens: int = 24  # the online task's default
    lr: float = 1e-5
    dpo_k: int = 2
    rloo_k: int = 8
    sft_steps: int | None = None  # None: the embedded default's SFT reference (sft.steps of conf/config.yaml)


FULL = Sizes()
QUICK = replace(FULL, steps=3, batch=4)


def overrides(row: str, s: Sizes, out_dir: str) -> list[str]:
    objective, k = ("dpo", s.dpo_k) if row == "online_dpo" else ("rloo", s.rloo_k)
    return [
        "task=online",
        f"objective={objective}",
        f"online.k={k}",
        f"online.max_new_tokens={s.max_new_tokens}",
        "online.temperature=1.0",
        f"train.steps={s.steps}",
        f"train.batch_size={s.batch}",
        f"train.lr={s.lr}",
        f"train.logging_steps={s.steps}",
        "eval=none",
        "run.save_model=false",
        "run.quiet=true",
        "logger=none",
        f"paths.cache_dir={CACHE}",
        f"paths.output_dir={out_dir}",
        f"hydra.run.dir={out_dir}/hydra",
        *([f"sft.steps={s.sft_steps}"] if s.sft_steps else []),
    ]


def compose(row: str, s: Sizes, out_dir: str) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "prefrun" / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=[o for o in overrides(row, s, out_dir) if "hydra." not in o])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the two sides, each in its own child process ------------------------------------------------------
def prefrun_child(row: str, s: Sizes) -> dict[str, Any]:
    """The prefrun CLI itself, in this process (task=online, eval off), and the figures of its results.json."""
    from prefrun import cli

    with tempfile.TemporaryDirectory() as tmp:
        sys.argv = ["prefrun", *overrides(row, s, tmp)]
        try:
            cli.main()
        except SystemExit as e:
            if e.code not in (0, None):
                raise
        (path,) = Path(tmp).rglob("results.json")
        results = json.loads(path.read_text())
    training, online = results["training"], results["online"]
    return {
        "steps": training["steps"],
        "train_s": training["train_runtime_s"],
        "sampling_s": online["sampling_s"],
        "scoring_s": online["scoring_s"],
        "logps_s": online["logps_s"],
        "reference_path": results["reference_path"],
        "peak_rss_mib": peak_rss_mib(),
    }


def trl_child(row: str, s: Sizes, reference_path: str) -> dict[str, Any]:
    """TRL's trainer on the same SFT model, prompts and settings, with the sort oracle as its reward function."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefrun.data.sources import build_data

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(row, s, tmp)
        data = build_data(cfg.dataset, cfg.seed)
        oracle = data.reward_fn

        def oracle_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
            return [float(oracle(p, c)) for p, c in zip(prompts, completions, strict=True)]

        dataset = Dataset.from_dict({"prompt": [r["prompt"] for r in data.train]})
        tokenizer = AutoTokenizer.from_pretrained(reference_path)
        common = {
            "output_dir": tmp,
            "max_steps": s.steps,
            "learning_rate": s.lr,
            "lr_scheduler_type": "constant",
            "optim": "adamw_torch",
            "logging_steps": s.steps,
            "save_strategy": "no",
            "report_to": [],
            "use_cpu": not torch.cuda.is_available(),
            "bf16": False,
            "gradient_checkpointing": False,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "seed": cfg.seed,
            "disable_tqdm": True,
        }
        if row == "online_dpo":
            os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
            from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

            args = OnlineDPOConfig(
                **common, per_device_train_batch_size=s.batch, max_new_tokens=s.max_new_tokens, beta=[0.1]
            )
            reference = AutoModelForCausalLM.from_pretrained(reference_path, dtype=torch.float32)
            trainer = OnlineDPOTrainer(
                model=AutoModelForCausalLM.from_pretrained(reference_path, dtype=torch.float32),
                ref_model=reference,
                reward_funcs=[oracle_reward],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
            )
        else:
            from trl import RLOOConfig, RLOOTrainer

            args = RLOOConfig(
                **common,
                per_device_train_batch_size=s.batch * s.rloo_k,  # completions per step: B prompts × K
                num_generations=s.rloo_k,
                max_completion_length=s.max_new_tokens,
                beta=0.05,
                epsilon=0.2,
            )
            # RLOOTrainer reloads its reference from the policy's path (it takes no ref_model)
            trainer = RLOOTrainer(
                model=reference_path,
                reward_funcs=[oracle_reward],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
            )
        output = trainer.train()
    return {
        "steps": trainer.state.global_step,
        "train_s": output.metrics["train_runtime"],
        "peak_rss_mib": peak_rss_mib(),
    }


def run_child(which: str, row: str, s: Sizes, quick: bool, reference_path: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which, "--row", row]
    if quick:
        cmd.append("--quick")
    if s.sft_steps:
        cmd += ["--sft-steps", str(s.sft_steps)]
    if reference_path:
        cmd += ["--reference", reference_path]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} {row} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> float:
    return os.getloadavg()[0]


def bench_row(
    row: str, s: Sizes, repeats: int, quick: bool, reference: str | None
) -> tuple[list[dict], dict[str, Any]]:
    runs: dict[str, list[dict]] = {"prefrun": [], "trl": []}
    loads: list[float] = []
    if reference is None:  # a first, untimed prefrun run builds (or finds) the cached SFT model both start from
        reference = run_child("prefrun", row, s, quick)["reference_path"]
    for r in range(repeats):
        for which in ("trl", "prefrun") if r % 2 == 0 else ("prefrun", "trl"):
            result = run_child(which, row, s, quick, reference if which == "trl" else None)
            result["steps_per_s"] = result["steps"] / result["train_s"]
            runs[which].append(result)
            loads.append(load_average())
            print(
                f"[bench-online] {row} {which} repeat {r}: {result['steps_per_s']:.3f} steps/s, "
                f"{result['peak_rss_mib']:.0f} MiB peak RSS, load {loads[-1]:.1f}",
                file=sys.stderr,
                flush=True,
            )
    sps = {w: median([x["steps_per_s"] for x in runs[w]]) for w in runs}
    peak = {w: median([x["peak_rss_mib"] for x in runs[w]]) for w in runs}
    k = s.dpo_k if row == "online_dpo" else s.rloo_k
    label = f"{row} (K={k}, {s.batch} prompts/step)"
    baseline = "TRL OnlineDPOTrainer" if row == "online_dpo" else f"TRL RLOOTrainer(num_generations={k})"
    rows = [
        entry(
            label,
            "optimizer steps/s",
            sps["prefrun"],
            sps["trl"],
            sps["prefrun"] / sps["trl"],
            ">= 1.5",
            compared_with=baseline,
        )
    ]
    if row == "online_dpo":
        rows.append(
            entry(
                label,
                "peak RSS MiB",
                peak["prefrun"],
                peak["trl"],
                peak["prefrun"] / peak["trl"],
                "<= 1.0",
                compared_with=baseline,
            )
        )
    split = {
        key: median([x[key] / x["steps"] for x in runs["prefrun"]])
        for key in ("train_s", "sampling_s", "scoring_s", "logps_s")
    }
    split["train_step_s"] = split["train_s"] - split["sampling_s"] - split["scoring_s"] - split["logps_s"]
    detail = {"runs": runs, "prefrun_seconds_per_step": split, "load_average_1min": loads, "reference": reference}
    return rows, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 steps of 4 prompts, one repeat: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per row (default 3, quick 1)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--out", help="default outputs/bench/bench-online.json (--quick: bench-online-quick.json)")
    parser.add_argument("--sft-steps", type=int, help="SFT steps of the shared reference (default: the config's)")
    parser.add_argument("--child", choices=("prefrun", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = replace(QUICK if args.quick else FULL, sft_steps=args.sft_steps)
    if args.child:
        quiet()
        result = (
            prefrun_child(args.row, sizes) if args.child == "prefrun" else trl_child(args.row, sizes, args.reference)
        )
        print(json.dumps(result))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    if set(wanted) - set(ROWS):
        parser.error(f"unknown rows {sorted(set(wanted) - set(ROWS))}; choose from {ROWS}")
    start = time.perf_counter()
    rows: list[dict] = []
    details: dict[str, Any] = {}
    reference = None
    for name in wanted:
        row_rows, details[name] = bench_row(name, sizes, repeats, args.quick, reference)
        reference = details[name]["reference"]
        rows += row_rows
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "repeats": repeats,
        "machine": machine(),
        "sizes": asdict(sizes),
        "rows": rows,
        "details": details,
        "total_s": time.perf_counter() - start,
    }
    out = Path(args.out or OUT / ("bench-online-quick.json" if args.quick else "bench-online.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(rows)
    for name, detail in details.items():
        sp = detail["prefrun_seconds_per_step"]
        print(
            f"{name}: prefrun s/step {sp['train_s']:.3f} = sampling {sp['sampling_s']:.3f} + scoring "
            f"{sp['scoring_s']:.3f} + log-probs (policy+reference) {sp['logps_s']:.3f} + training "
            f"{sp['train_step_s']:.3f}; 1-min load average {min(detail['load_average_1min']):.1f}–"
            f"{max(detail['load_average_1min']):.1f}"
        )
    m = report["machine"]
    print(
        f"\n{m['cores']} cores, torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}; "
        f"{repeats} repeats, {report['total_s']:.0f}s; written {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
