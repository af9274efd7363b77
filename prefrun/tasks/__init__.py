"""Kinds of run, chosen by the ``task`` group: each is a ``Task`` registered by name.

A task offers ``prepare(cfg)`` (once, in one process, before ranks start: downloads, caches, the SFT
reference) and ``run(cfg, ctx) -> results`` (on every rank). The lifecycle around them (run directory,
config files, W&B, timings, results.json) is ``prefrun.runner``'s, written once for all of them.
"""

from __future__ import annotations

from prefrun.registry import Registry

TASKS = Registry(
    "task",
    modules=(
        "prefrun.tasks.preference",
        "prefrun.tasks.evaluate",
        "prefrun.tasks.reward_model",
        "prefrun.tasks.diffusion",
        "prefrun.tasks.online",
    ),
)
