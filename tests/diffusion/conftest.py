"""Fixtures of the diffusion tests: a tiny 8×8 UNet, its noise schedule, one shared cache, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest

CONF = str(Path(__file__).resolve().parents[2] / "prefrun" / "conf")


@pytest.fixture(scope="session")
def diffusion_cache(tmp_path_factory) -> Path:
    """One cache for the session's runs: the reference UNet is pretrained once."""
    return tmp_path_factory.mktemp("diffusion_cache")


@pytest.fixture(scope="session")
def unet_and_scheduler():
    """A fresh 8×8, 1-channel tiny UNet with 2 classes (the tiny_unet preset's widths) and the DDPM schedule."""
    from omegaconf import OmegaConf

    from prefrun.diffusion.models import noise_scheduler, tiny_unet

    cfg = OmegaConf.load(Path(CONF) / "model" / "tiny_unet.yaml")
    cfg.sample_size = 8
    schedule = OmegaConf.create({"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"})
    return tiny_unet(cfg, num_classes=2), noise_scheduler(schedule)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the tiny UNet's kernels are too small to share, and two threads on a loaded 2-core
    machine wait on each other (measured: 0.12 s per DPO step on one thread, 2.5 s on two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
