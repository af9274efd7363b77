"""Reward functions for the decoder tests (``reward=python reward.fn=scorers:<name>``), TRL's signature."""

from __future__ import annotations

import zlib


def crc(text: str) -> float:
    """A continuous, deterministic score of a text in [0, 1): its CRC-32 scaled (ties only for equal texts)."""
    return zlib.crc32(text.encode()) / 2**32


def crc_score(prompts: list, completions: list, **kwargs) -> list[float]:
    return [crc(c) for c in completions]


def length_score(prompts: list, completions: list, **kwargs) -> list[float]:
    """The number of words: many ties among short answers."""
    return [float(len(c.split())) for c in completions]
