"""Evaluation of a diffusion policy against its reference, on the synthetic task's oracle and guard.

- Oracle reward of N samples of policy and reference drawn from the *same* initial noise (sample i of one
  pairs with sample i of the other): means, and the win rate of the policy with ties as ½.
- Held-out implicit accuracy: the share of held-out pairs where the policy lowers the winner's error
  relative to the loser's more than the reference does, (ℓ_w − ℓ_l)_θ < (ℓ_w − ℓ_l)_ref (Diffusion-DPO's
  implicit reward), averaged over ``timesteps`` shared draws of t and ε per pair; ties ½.
- Quality guard, so that "reward up" is not "images broken": the fraction of well-formed blobs and the
  brightness statistics of both sets of samples (and of the data), and the reference's denoising error at
  t = T/2 on each set (an off-manifold proxy; its rise, ``ref_error_drift``, stands in for the KL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prefrun.diffusion.data import ImageData
from prefrun.diffusion.sampling import ddim_sample, initial_noise
from prefrun.diffusion.trainer import denoising_errors, pair_errors, reference_errors, shared_noise


def sample_classes(n: int, num_classes: int) -> torch.Tensor | None:
    return torch.arange(n) % num_classes if num_classes else None


@torch.no_grad()
def reference_error(reference: Any, scheduler: Any, images: torch.Tensor, classes: Any, seed: int) -> float:
    """The reference's mean denoising error at t = T/2 on ``images`` (fixed noise from ``seed``)."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.full((len(images),), int(scheduler.config.num_train_timesteps) // 2, dtype=torch.long)
    return denoising_errors(reference, scheduler, images, noise, t, classes).mean().item()


@torch.no_grad()
def implicit_accuracy(
    policy: Any, reference: Any, scheduler: Any, data: ImageData, timesteps: int, seed: int, batch_size: int = 256
) -> float:
    """P[(ℓ_w − ℓ_l)_θ < (ℓ_w − ℓ_l)_ref] over held-out pairs, ℓ averaged over ``timesteps`` shared (t, ε);
    ``reference`` None: the policy with its LoRA adapter turned off."""
    held = data.held_out
    gen = torch.Generator().manual_seed(seed)
    steps = int(scheduler.config.num_train_timesteps)
    diff = torch.zeros(len(held))
    for _ in range(timesteps):
        for start in range(0, len(held), batch_size):
            sl = slice(start, start + batch_size)
            x_w, x_l = held.winners[sl], held.losers[sl]
            classes = held.condition_at(sl)
            noise, t = shared_noise(x_w, steps, gen)
            mine = pair_errors(policy, scheduler, x_w, x_l, classes, noise, t)

            def errors(model: Any, x_w=x_w, x_l=x_l, classes=classes, noise=noise, t=t) -> torch.Tensor:  # noqa: ANN001
                return pair_errors(model, scheduler, x_w, x_l, classes, noise, t)

            ref = reference_errors(policy, reference, errors)
            diff[sl] += (mine[:, 0] - mine[:, 1]) - (ref[:, 0] - ref[:, 1])
    return ((diff < 0).float() + 0.5 * (diff == 0).float()).mean().item()


def evaluate(
    policy: Any, reference: Any, scheduler: Any, data: ImageData, settings: Any, run_dir: Path | None
) -> tuple[dict[str, float], list[list[str]], dict[str, torch.Tensor]]:
    """(metrics, summary rows [label, reference, policy], samples {policy, reference}) of a trained policy."""
    from prefrun.results.progress import Progress

    n, steps, seed = int(settings.samples), int(settings.ddim_steps), int(settings.seed)
    x_T = initial_noise(n, data.shape, seed)
    classes = sample_classes(n, data.num_classes)
    policy.eval()
    reference.eval()
    samples = {}
    with Progress("sample", 2 * n * steps, label="denoising", unit="img", min_interval=10) as bar:
        for name, model in (("reference", reference), ("policy", policy)):
            samples[name] = ddim_sample(model, scheduler, x_T, classes, steps, int(settings.batch_size), bar)
    metrics: dict[str, float] = {}
    if data.oracle is not None:
        r_pol, r_ref = data.oracle(samples["policy"]), data.oracle(samples["reference"])
        metrics["policy/oracle_reward"] = r_pol.mean().item()
        metrics["reference/oracle_reward"] = r_ref.mean().item()
        metrics["win_rate"] = ((r_pol > r_ref).float() + 0.5 * (r_pol == r_ref).float()).mean().item()
    if len(data.held_out):
        metrics["implicit_acc"] = implicit_accuracy(
            policy, reference, scheduler, data, int(settings.implicit_timesteps), seed
        )
    error_seed = seed + 1
    for name, images in samples.items():
        if data.quality is not None:
            metrics.update({f"{name}/{k}": v for k, v in data.quality(images).items()})
        metrics[f"{name}/ref_error"] = reference_error(reference, scheduler, images, classes, error_seed)
    metrics["ref_error_drift"] = metrics["policy/ref_error"] - metrics["reference/ref_error"]
    if data.quality is not None:
        metrics.update({f"data/{k}": v for k, v in data.quality(data.held_out.winners).items()})
    return metrics, summary_rows(metrics), samples


def summary_rows(metrics: dict[str, float]) -> list[list[str]]:
    rows = []
    for key, label in (
        ("oracle_reward", "oracle reward"),
        ("well_formed", "well-formed blobs"),
        ("brightness_mean", "brightness mean"),
        ("ref_error", "reference error"),
    ):
        if f"policy/{key}" in metrics:
            rows.append([label, f"{metrics[f'reference/{key}']:.3f}", f"{metrics[f'policy/{key}']:.3f}"])
    for key, label in (("win_rate", "win rate vs reference"), ("implicit_acc", "held-out implicit acc")):
        if key in metrics:
            rows.append([label, "", f"{metrics[key]:.3f}"])
    return rows


def sample_grid(samples: dict[str, torch.Tensor], path: Path, per_side: int = 64, scale: int = 4) -> Path:
    """A PNG: the reference's samples (left) and the policy's from the same noise (right), 8 per row."""
    import numpy as np
    from PIL import Image

    panels = []
    for name in ("reference", "policy"):
        images = samples[name][:per_side]
        cols = 8
        rows = (len(images) + cols - 1) // cols
        c, h, w = images.shape[1:]
        grid = torch.full((c, rows * (h + 1) + 1, cols * (w + 1) + 1), 1.0)
        for i, image in enumerate(images):
            r, k = divmod(i, cols)
            grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = image
        panels.append(grid)
    gap = torch.full((panels[0].shape[0], panels[0].shape[1], 4), 1.0)
    full = torch.cat([panels[0], gap, panels[1]], dim=2)
    array = ((full.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    array = np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path
