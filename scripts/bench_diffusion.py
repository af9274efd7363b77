#!/usr/bin/env python
"""make bench rows 8-9: prefrun's Diffusion-DPO step against the diffusers research example's loop, and MaPO's
step against Diffusion-DPO's, on the same tiny UNet, batch and data.

    python scripts/bench_diffusion.py              # 3 repeats; also `scripts/bench.py --rows diffusion`
    python scripts/bench_diffusion.py --quick      # a smoke test of the script

  8. diffusion  prefrun ``DiffusionTrainer`` with objective=diffusion_dpo (a transformers Trainer: its dataloader,
                AdamW, the objective registry) vs the loop of diffusers' examples/research_projects/diffusion_dpo/
                train_diffusion_dpo.py written out (concatenate winner and loser, one noise and timestep per
                pair, ``model_losses_w - model_losses_l`` against the frozen reference's, −log σ(−½β·Δ), AdamW):
                images/s (ratio ≥ 1.0), peak RSS (≤ 1.0) and its growth from the first step on (the Trainer's
                import alone holds ~145 MiB more RSS than the example's imports), each in its own child process.
  9. mapo       prefrun objective=mapo vs objective=diffusion_dpo: step time (MaPO has no reference forward and
                no reference weights; the paper reports ~15% less training time) and peak RSS.

The UNet is ``model=tiny_unet`` (16×16, 1 channel, channels (16, 32)) on random images, 8 pairs a step, one
thread, fp32. Steps after the warm-up are timed; medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH, WARMUP, TIMED, QUICK_TIMED = 8, 3, 30, 4
BETA_DPO = 5000.0  # prefrun's official-form β; the diffusers example writes β_dpo = 2500 with the ½ folded in


READY: list[float] = []  # peak RSS once imports, models and optimizer are in place, before the first step


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup():
    import torch
    from omegaconf import OmegaConf

    from prefrun.diffusion.models import noise_scheduler, tiny_unet

    torch.set_num_threads(1)
    model_cfg = OmegaConf.load(ROOT / "prefrun" / "conf" / "model" / "tiny_unet.yaml")
    sched_cfg = OmegaConf.create({"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"})
    g = torch.Generator().manual_seed(0)
    n = BATCH * (WARMUP + TIMED)
    x_w, x_l = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, torch.rand(n, 1, 16, 16, generator=g) * 2 - 1
    policy, reference = tiny_unet(model_cfg, 0), tiny_unet(model_cfg, 0)
    reference.requires_grad_(False).eval()
    return policy, reference, noise_scheduler(sched_cfg), x_w, x_l


def _time_steps(step, steps: int) -> float:
    """Seconds per step of ``step(i)`` over the timed steps, after the warm-up."""
    for i in range(WARMUP):
        step(i)
    started = time.perf_counter()
    for i in range(WARMUP, WARMUP + steps):
        step(i)
    return (time.perf_counter() - started) / steps


def child_diffusers(steps: int) -> float:
    """The diffusers research example's training step, as that script computes it (its β 2500 = ½ · 5000)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator  # the example's own imports: accelerate, transformers, diffusers
    from transformers import AutoTokenizer, PretrainedConfig  # noqa: F401

    unet, ref_unet, scheduler, x_w, x_l = _setup()
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    beta_dpo = BETA_DPO / 2
    READY.append(_rss_mib())

    def step(i: int) -> None:
        sl = slice(i * BATCH, (i + 1) * BATCH)
        latents = torch.cat([x_w[sl], x_l[sl]])
        noise = torch.randn_like(latents).chunk(2)[0].repeat(2, 1, 1, 1)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (BATCH,)).repeat(2)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        model_pred = unet(noisy, timesteps).sample
        model_losses = (model_pred.float() - noise.float()).pow(2).mean(dim=[1, 2, 3])
        model_losses_w, model_losses_l = model_losses.chunk(2)
        model_diff = model_losses_w - model_losses_l
        with torch.no_grad():
            ref_pred = ref_unet(noisy, timesteps).sample.detach()
            ref_losses = (ref_pred.float() - noise.float()).pow(2).mean(dim=[1, 2, 3])
            ref_losses_w, ref_losses_l = ref_losses.chunk(2)
            ref_diff = ref_losses_w - ref_losses_l
        inside_term = -1 * beta_dpo * (model_diff - ref_diff)
        loss = -1 * F.logsigmoid(inside_term).mean()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

    return _time_steps(step, steps)


def child_prefrun(objective_name: str, steps: int) -> float:
    """prefrun's DiffusionTrainer on the same data: one ``train()`` call, its steps timed by a callback."""
    from transformers import TrainerCallback

    from prefrun.diffusion.trainer import DiffusionTrainer, PairDataset, training_arguments
    from prefrun.objectives.config import build_objective
    from prefrun.trainers.settings import TrainSettings

    unet, ref_unet, scheduler, x_w, x_l = _setup()
    from omegaconf import OmegaConf

    objective_cfg = OmegaConf.load(ROOT / "prefrun" / "conf" / "objective" / f"{objective_name}.yaml")
    objective = build_objective(objective_cfg, trains="diffusion")
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(steps=WARMUP + steps, batch_size=BATCH, lr=1e-5, logging_steps=10_000)
        args = training_arguments(settings, tmp, "cpu", report_to=[], dataloader_drop_last=True)
        trainer = DiffusionTrainer(
            model=unet,
            args=args,
            train_dataset=PairDataset(x_w, x_l, None),
            objective=objective,
            noise_scheduler=scheduler,
            reference=ref_unet if objective.needs_reference else None,
            callbacks=[Clock()],
        )
        if not objective.needs_reference:
            del ref_unet  # MaPO holds no reference weights
        READY.append(_rss_mib())
        trainer.train()
    return (marks[-1] - marks[WARMUP - 1]) / steps


def child_main(which: str, steps: int) -> None:
    seconds = child_diffusers(steps) if which == "diffusers" else child_prefrun(which, steps)
    peak = _rss_mib()
    print(json.dumps({"step_s": seconds, "peak_rss_mib": peak, "training_rss_mib": peak - READY[0]}))


def run_child(which: str, steps: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, __file__, "--child", which, "--steps", str(steps)], capture_output=True,
                         text=True, env=env, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def row_diffusion(repeats: int, quick: bool) -> list[dict]:
    """Rows 8 and 9: every variant once per repeat, one after another, each in a fresh child process."""
    steps = QUICK_TIMED if quick else TIMED
    runs: dict[str, list[dict[str, float]]] = {"diffusion_dpo": [], "diffusers": [], "mapo": []}
    for _ in range(repeats):
        for which in runs:
            runs[which].append(run_child(which, steps))
    ours, theirs, mapo = (runs[k] for k in ("diffusion_dpo", "diffusers", "mapo"))
    ips = {k: 2 * BATCH / _median(v, "step_s") for k, v in runs.items()}  # images through the policy per second
    rows = [
        {"row": "diffusion", "metric": "images/s (Diffusion-DPO step)", "prefrun": ips["diffusion_dpo"],
         "baseline": ips["diffusers"], "ratio": ips["diffusion_dpo"] / ips["diffusers"], "target": "≥ 1.0"},
        {"row": "diffusion", "metric": "peak RSS MiB", "prefrun": _median(ours, "peak_rss_mib"),
         "baseline": _median(theirs, "peak_rss_mib"),
         "ratio": _median(ours, "peak_rss_mib") / _median(theirs, "peak_rss_mib"), "target": "≤ 1.0"},
        {"row": "diffusion", "metric": "RSS growth while training MiB", "prefrun": _median(ours, "training_rss_mib"),
         "baseline": _median(theirs, "training_rss_mib"),
         "ratio": _median(ours, "training_rss_mib") / max(_median(theirs, "training_rss_mib"), 1e-9),
         "target": "≤ 1.0"},
        {"row": "mapo", "metric": "step s (MaPO / Diffusion-DPO)", "prefrun": _median(mapo, "step_s"),
         "baseline": _median(ours, "step_s"), "ratio": _median(mapo, "step_s") / _median(ours, "step_s"),
         "target": "paper ≈ 0.85"},
        {"row": "mapo", "metric": "peak RSS MiB (MaPO / Diffusion-DPO)", "prefrun": _median(mapo, "peak_rss_mib"),
         "baseline": _median(ours, "peak_rss_mib"),
         "ratio": _median(mapo, "peak_rss_mib") / _median(ours, "peak_rss_mib"), "target": "< 1.0"},
    ]  # fmt: skip
    for r in rows:
        r.update(repeats=repeats, timed_steps=steps, batch_pairs=BATCH)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=TIMED, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.steps)
        return 0
    rows = row_diffusion(1 if args.quick else args.repeats, args.quick)
    print("| row | metric | prefrun | baseline | ratio | target |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['metric']} | {r['prefrun']:.3g} | {r['baseline']:.3g} | {r['ratio']:.2f} | "
              f"{r['target']} |")  # fmt: skip
    out = ROOT / "outputs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_diffusion.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
