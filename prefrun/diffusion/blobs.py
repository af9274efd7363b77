"""The synthetic image task (``dataset=blobs``): single Gaussian blobs, an oracle that wants them on the left.

Images are H×W grayscale in [−1, 1]: a background at −1 with mild noise and one blob
b + A·exp(−‖p − c‖² / 2σ²) with random centre c, width σ and amplitude A. With ``classes: 2`` the class
label (the prompt analogue, fed to the UNet's class embedding) names the blob's size: 0 small, 1 large.

Oracle: how far left the blob's mass lies, r(x) = (m − ĉ_x) / m ∈ [−1, 1], where m = (W − 1)/2 and ĉ_x is
the column centroid of relu(x − median(x)). Subtracting the image's median makes it blind to brightening
everything, and a centroid is blind to scaling the blob: only moving mass left pays. Images that do so by
ceasing to be blobs (a bright left edge, noise) are caught by the quality guard reported next to the reward:
the fraction of samples a single Gaussian fits with R² ≥ 0.8 (and a visible amplitude), brightness statistics
against the data's, and the frozen reference's denoising error on the samples (``evaluation.py``).

Pairs: two images of the same class, the one with the higher r preferred; near-ties (|Δr| < ``min_gap``)
dropped and counted.
"""

from __future__ import annotations

import torch

WELL_FORMED_R2 = 0.8
MIN_AMPLITUDE = 0.5  # a fitted blob fainter than this is no blob (an empty or washed-out image)
SIGMA_GRID = (0.8, 1.1, 1.5, 2.0, 2.6, 3.3, 4.2)


def make_blobs(n: int, cfg: dict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images [n, 1, H, W] and their classes [n] (zeros when the task has no classes)."""
    size = int(cfg["image_size"])
    classes = int(cfg.get("classes", 0))
    labels = torch.randint(0, max(classes, 1), (n,), generator=generator)
    lo, hi = (float(v) for v in cfg["sigma"])
    u = torch.rand(n, generator=generator)
    if classes >= 2:  # class k draws σ from the k-th of `classes` equal slices of [lo, hi]
        width = (hi - lo) / classes
        sigma = lo + width * (labels.float() + u)
    else:
        sigma = lo + (hi - lo) * u
    a_lo, a_hi = (float(v) for v in cfg["amplitude"])
    amplitude = a_lo + (a_hi - a_lo) * torch.rand(n, generator=generator)
    margin = float(cfg.get("margin", 2.5))
    centre = margin + (size - 1 - 2 * margin) * torch.rand(n, 2, generator=generator)
    grid = torch.arange(size, dtype=torch.float32)
    dy = (grid[None, :, None] - centre[:, 0, None, None]) ** 2
    dx = (grid[None, None, :] - centre[:, 1, None, None]) ** 2
    blob = amplitude[:, None, None] * torch.exp(-(dx + dy) / (2 * sigma[:, None, None] ** 2))
    noise = float(cfg.get("noise", 0.05)) * torch.randn(n, size, size, generator=generator)
    images = (-1.0 + blob + noise).clamp(-1, 1)
    return images[:, None], labels


def _mass(images: torch.Tensor) -> torch.Tensor:
    """relu(x − median(x)) per image [N, H, W]: the blob's mass, blind to a uniform offset."""
    x = images.mean(dim=1)  # over channels
    median = x.flatten(1).median(dim=1).values
    return (x - median[:, None, None]).clamp(min=0)


def oracle_reward(images: torch.Tensor) -> torch.Tensor:
    """r(x) = (m − ĉ_x) / m, the blob mass's column centroid ĉ_x left of the centre m (0 for a flat image)."""
    w = _mass(images.float())
    width = w.shape[-1]
    cols = torch.arange(width, dtype=w.dtype)
    total = w.sum(dim=(1, 2))
    cx = (w.sum(dim=1) * cols).sum(dim=1) / total.clamp(min=1e-8)
    middle = (width - 1) / 2
    return torch.where(total > 1e-6, (middle - cx) / middle, torch.zeros_like(cx))


def blob_fit(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Least-squares fit of x ≈ a + b·g_σ(centroid) per image over a σ grid: R² and amplitude b of the best σ."""
    x = images.float().mean(dim=1)
    n, h, wd = x.shape
    w = _mass(images.float())
    total = w.sum(dim=(1, 2)).clamp(min=1e-8)
    rows, cols = torch.arange(h, dtype=x.dtype), torch.arange(wd, dtype=x.dtype)
    cy = (w.sum(dim=2) * rows).sum(dim=1) / total
    cx = (w.sum(dim=1) * cols).sum(dim=1) / total
    d2 = (rows[None, :, None] - cy[:, None, None]) ** 2 + (cols[None, None, :] - cx[:, None, None]) ** 2
    sigma = torch.tensor(SIGMA_GRID, dtype=x.dtype)
    g = torch.exp(-d2[:, None] / (2 * sigma[None, :, None, None] ** 2)).flatten(2)  # [N, S, HW]
    y = x.flatten(1)[:, None, :]
    g_c, y_c = g - g.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    b = (g_c * y_c).sum(-1) / (g_c * g_c).sum(-1).clamp(min=1e-8)
    residual = ((y_c - b[..., None] * g_c) ** 2).sum(-1)
    r2 = 1 - residual / (y_c**2).sum(-1).clamp(min=1e-8)
    best = r2.argmax(dim=1)
    pick = best[:, None]
    return {"r2": r2.gather(1, pick)[:, 0], "amplitude": b.gather(1, pick)[:, 0], "sigma": sigma[best]}


def quality(images: torch.Tensor) -> dict[str, float]:
    """The guard's image statistics: fraction of well-formed blobs, brightness mean and std over images."""
    fit = blob_fit(images)
    well = (fit["r2"] >= WELL_FORMED_R2) & (fit["amplitude"] >= MIN_AMPLITUDE)
    brightness = images.float().mean(dim=(1, 2, 3))
    return {
        "well_formed": well.float().mean().item(),
        "brightness_mean": brightness.mean().item(),
        "brightness_std": brightness.std().item() if len(brightness) > 1 else 0.0,
    }


def make_pairs(
    n_pairs: int, cfg: dict, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(winners, losers, classes, near-ties dropped): pairs of same-class images ranked by the oracle."""
    min_gap = float(cfg.get("min_gap", 0.05))
    want, w_all, l_all, c_all, dropped = n_pairs, [], [], [], 0
    while want > 0:
        draw = max(2 * want, 64)
        a, labels = make_blobs(draw, cfg, generator)
        b, _ = make_blobs(draw, {**cfg, "classes": 0}, generator)
        if int(cfg.get("classes", 0)) >= 2:  # b takes a's classes: redraw b's σ for them
            b, _ = _same_class(labels, cfg, generator)
        ra, rb = oracle_reward(a), oracle_reward(b)
        keep = (ra - rb).abs() >= min_gap
        dropped += int((~keep).sum())
        a_wins = (ra > rb)[keep]
        a, b, labels = a[keep], b[keep], labels[keep]
        winners = torch.where(a_wins[:, None, None, None], a, b)
        losers = torch.where(a_wins[:, None, None, None], b, a)
        w_all.append(winners[:want])
        l_all.append(losers[:want])
        c_all.append(labels[:want])
        want -= len(winners[:want])
    return torch.cat(w_all), torch.cat(l_all), torch.cat(c_all), dropped


def _same_class(labels: torch.Tensor, cfg: dict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of the given classes: drawn per class, scattered back in order."""
    out = torch.empty(len(labels), 1, int(cfg["image_size"]), int(cfg["image_size"]))
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero()[:, 0]
        images, got = make_blobs(4 * len(idx) + 16, cfg, generator)
        chosen = images[got == k][: len(idx)]
        while len(chosen) < len(idx):  # a rare short draw: top up
            more, got = make_blobs(4 * len(idx), cfg, generator)
            chosen = torch.cat([chosen, more[got == k]])[: len(idx)]
        out[idx] = chosen
    return out, labels
