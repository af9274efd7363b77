"""Ranks and the batch layout of a run: readable before torch.distributed starts, usable by every layer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from prefrun.errors import PrefrunError


def world_size(cfg: Any) -> int:
    """Processes of the run: hardware.num_processes (per node) × hardware.num_nodes."""
    hw = cfg.hardware
    return max(1, int(hw.get("num_processes", 1))) * max(1, int(hw.get("num_nodes", 1)))


def batch_layout(cfg: Any) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) for the global ``train.batch_size``.

    The global batch is what the experiment sets; the hardware only splits it, so changing the number
    of processes keeps the optimisation identical. ``hardware.per_device_batch_size`` (optional) caps
    what one device holds; the rest becomes gradient accumulation.
    """
    world = world_size(cfg)
    global_batch = int(cfg.train.batch_size)
    if global_batch % world:
        raise PrefrunError(
            f"train.batch_size={global_batch} does not divide over {world} processes "
            f"(hardware.num_processes={cfg.hardware.num_processes} x hardware.num_nodes={cfg.hardware.num_nodes}); "
            f"use a multiple of {world}"
        )
    per_rank = global_batch // world
    per_device = cfg.hardware.get("per_device_batch_size") or per_rank
    if per_device <= 0 or per_rank % per_device:
        raise PrefrunError(
            f"hardware.per_device_batch_size={per_device} does not divide the {per_rank} examples per process "
            f"(train.batch_size={global_batch} over {world} processes)"
        )
    return per_device, per_rank // per_device


def rank() -> int:
    """This process's global rank (0 outside distributed runs); readable before torch.distributed starts."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


@contextlib.contextmanager
def rank0_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. computes and caches reference log-probs), then the others run it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield
