"""DDIM sampling (Song et al. 2021, η = 0) from given initial noise, so two models' samples pair up by index."""

from __future__ import annotations

from typing import Any

import torch


def initial_noise(n: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """x_T [n, C, H, W] from ``seed``: the same for every model evaluated with it."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def ddim_sample(
    unet: Any,
    train_scheduler: Any,
    x_T: torch.Tensor,
    classes: torch.Tensor | None,
    steps: int,
    batch_size: int = 256,
    progress: Any = None,
) -> torch.Tensor:
    """Samples x_0 [n, C, H, W] in [−1, 1] by ``steps`` deterministic DDIM steps from ``x_T``.

    The DDIM schedule is built from the training scheduler's config (same β schedule and T).
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(train_scheduler.config, clip_sample=False)
    scheduler.set_timesteps(int(steps))
    device = next(unet.parameters()).device
    out = []
    for start in range(0, len(x_T), batch_size):
        x = x_T[start : start + batch_size].to(device)
        labels = None if classes is None else classes[start : start + batch_size].to(device)
        for t in scheduler.timesteps:
            eps = unet(x, t.to(device).expand(len(x)), class_labels=labels).sample
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            if progress is not None:
                progress.update(len(x))
        out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out)
