"""The image datasets by name: ``build_image_data(dataset_cfg, seed)`` → ``ImageData`` (blobs | pickapic)."""

from __future__ import annotations

from typing import Any

import torch

from prefrun.diffusion.data import IMAGE_DATASETS, ImageData, ImagePairs
from prefrun.errors import PrefrunError


def build_image_data(dataset_cfg: Any, seed: int) -> ImageData:
    """The dataset of ``dataset.name`` (blobs | pickapic); a text dataset is a one-line error."""
    name = str(dataset_cfg.name)
    if name == "blobs":
        return _blobs(dataset_cfg)
    if name == "pickapic":
        from prefrun.diffusion.pickapic import load_pickapic

        return load_pickapic(dataset_cfg, seed)
    raise PrefrunError(
        f"dataset={name} holds text; task=diffusion needs image pairs: dataset=<{'|'.join(IMAGE_DATASETS)}>"
    )


def _blobs(cfg: Any) -> ImageData:
    from omegaconf import OmegaConf

    from prefrun.diffusion import blobs

    settings = OmegaConf.to_container(cfg, resolve=True)
    # The data are the task's, not the run's: one seed (dataset.data_seed) so every run of a sweep sees them.
    gen = torch.Generator().manual_seed(int(settings.get("data_seed", 0)))
    pre_images, pre_classes = blobs.make_blobs(int(settings["pretrain_images"]), settings, gen)
    wins, losses, c, dropped = blobs.make_pairs(int(settings["train_pairs"]), settings, gen)
    hw, hl, hc, held_dropped = blobs.make_pairs(int(settings["eval_pairs"]), settings, gen)
    classes = int(settings.get("classes", 0))
    size = int(settings["image_size"])
    return ImageData(
        name="blobs",
        train=ImagePairs(wins, losses, c if classes else None),
        held_out=ImagePairs(hw, hl, hc if classes else None),
        shape=(1, size, size),
        num_classes=classes,
        pretrain=(pre_images, pre_classes if classes else None),
        oracle=blobs.oracle_reward,
        quality=blobs.quality,
        dropped={"near_ties": dropped, "held_out_near_ties": held_dropped},
        fingerprint={k: v for k, v in settings.items() if k not in ("train_pairs", "eval_pairs", "min_gap")},
    )
