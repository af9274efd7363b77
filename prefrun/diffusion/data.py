"""Image preference data: the one container both image datasets fill, and ``build_image_data`` by dataset name.

ImagePairs: winners, losers [N, C, H, W] in [−1, 1] (or latents), classes [N] (or None), captions (or None),
            condition (latent pairs: the captions' text-encoder states, prefrun.diffusion.latent.TEXT_KEYS)
ImageData:  train / held-out pairs, the reference's pretraining images (synthetic tasks), the oracle and
            the quality guard (synthetic tasks), the image shape and the number of classes
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from prefrun.errors import PrefrunError

IMAGE_DATASETS = ("blobs", "pickapic")


@dataclass
class ImagePairs:
    winners: torch.Tensor
    losers: torch.Tensor
    classes: torch.Tensor | None = None
    captions: list[str] | None = None
    condition: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.winners)

    def condition_at(self, index: Any) -> torch.Tensor | dict[str, torch.Tensor] | None:
        """What the U-Net is conditioned on for pairs ``index``: their text condition, their classes, or None."""
        if self.condition is not None:
            return {k: v[index] for k, v in self.condition.items()}
        return None if self.classes is None else self.classes[index]


@dataclass
class ImageData:
    name: str
    train: ImagePairs
    held_out: ImagePairs
    shape: tuple[int, int, int]  # (channels, height, width)
    num_classes: int = 0
    pretrain: tuple[torch.Tensor, torch.Tensor] | None = None  # (images, classes) the reference learns
    oracle: Callable[[torch.Tensor], torch.Tensor] | None = None
    quality: Callable[[torch.Tensor], dict[str, float]] | None = None
    dropped: dict[str, int] = field(default_factory=dict)  # near-ties, ties, ... and how many
    fingerprint: dict[str, Any] = field(default_factory=dict)  # what the reference cache key needs


def check_fits_model(data: ImageData, model_cfg: Any) -> None:
    """A pixel model takes images of its own size and channels: one line naming both fields otherwise."""
    if str(model_cfg.get("kind", "pixel")) != "pixel":
        return
    channels, height, width = data.shape
    want_c, want_s = int(model_cfg.in_channels), int(model_cfg.sample_size)
    if channels != want_c:
        raise PrefrunError(
            f"dataset {data.name} has {channels}-channel images but model {model_cfg.name} takes "
            f"model.in_channels={want_c}; set model.in_channels={channels} or dataset.channels={want_c}"
        )
    if (height, width) != (want_s, want_s):
        raise PrefrunError(
            f"dataset {data.name} has {height}×{width} images but model {model_cfg.name} takes "
            f"model.sample_size={want_s}; set model.sample_size={height} or dataset.image_size={want_s}"
        )
