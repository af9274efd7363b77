"""Pick-a-Pic v2 (Kirstain et al. 2023; ``yuvalkirstain/pickapic_v2``): a caption, two images and a label.

The real schema's fields read here: ``caption``; ``jpg_0`` / ``jpg_1`` (the images: bytes on the hub, a
``{"bytes", "path"}`` dict from datasets' Image feature, or a file path relative to a local file);
``label_0`` / ``label_1`` (1 / 0 = image 0 / 1 preferred, 0.5 / 0.5 = a tie); ``has_label``. As in both
reference codes, ties are dropped (and counted), the preferred image becomes the winner, and images are
resized and centre-cropped to ``dataset.resolution`` (null: kept as they are, then all must share a size).

    prefrun task=diffusion dataset=pickapic dataset.path=rows.jsonl        # local rows in the real schema
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from prefrun.diffusion.data import ImageData, ImagePairs
from prefrun.errors import PrefrunError

HUB_ID = "yuvalkirstain/pickapic_v2"
FIELDS = ("caption", "jpg_0", "jpg_1", "label_0", "label_1")


def read_rows(path: str) -> tuple[list[dict[str, Any]], Path | None]:
    """Rows of a local .jsonl / .json / .parquet file (and its folder, for relative image paths), or the hub's."""
    local = Path(path).expanduser()
    if local.suffix in (".jsonl", ".json", ".parquet"):
        if not local.is_file():
            raise PrefrunError(f"dataset.path={path} does not exist; give a .jsonl/.parquet file of Pick-a-Pic rows")
        if local.suffix == ".parquet":
            import pandas as pd

            return pd.read_parquet(local).to_dict("records"), local.parent
        import json

        text = local.read_text()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()] if local.suffix == ".jsonl" else None
        return (rows if rows is not None else json.loads(text)), local.parent
    from prefrun.runtime.hub import unavailable

    reason = unavailable(path, "dataset")
    if reason:
        raise PrefrunError(f"dataset {path} {reason}; download it first or give dataset.path=<local .jsonl/.parquet>")
    import datasets

    return list(datasets.load_dataset(path, split="train")), None


def _image(value: Any, root: Path | None, row: int, key: str, channels: int) -> Any:
    from PIL import Image

    if isinstance(value, dict):  # datasets' Image feature
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray):
        image = Image.open(io.BytesIO(value))
    elif isinstance(value, str):
        file = Path(value) if Path(value).is_absolute() or root is None else root / value
        if not file.is_file():
            raise PrefrunError(f"row {row}: {key} names {file}, which does not exist; fix the row or drop it")
        image = Image.open(file)
    elif hasattr(value, "convert"):
        image = value
    else:
        raise PrefrunError(f"row {row}: {key} is {type(value).__name__}; it must hold image bytes or a file path")
    return image.convert("L" if channels == 1 else "RGB")


def _tensor(image: Any, resolution: int | None) -> torch.Tensor:
    """[C, H, W] in [−1, 1]: resized (shorter side) and centre-cropped to ``resolution`` when given."""
    import numpy as np
    from PIL import Image

    if resolution:
        w, h = image.size
        scale = resolution / min(w, h)
        image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()) / 127.5 - 1.0
    return array[None] if array.ndim == 2 else array.permute(2, 0, 1)


def pickapic_pairs(
    rows: list[dict[str, Any]], root: Path | None, channels: int, resolution: int | None
) -> tuple[ImagePairs, dict[str, int]]:
    """The rows as (winner, loser, caption) pairs; ties and unlabelled rows dropped and counted."""
    winners, losers, captions = [], [], []
    dropped = {"ties": 0, "unlabelled": 0}
    for i, row in enumerate(rows):
        missing = [k for k in FIELDS if k not in row]
        if missing:
            raise PrefrunError(f"row {i} lacks {', '.join(missing)}: Pick-a-Pic rows hold {', '.join(FIELDS)}")
        if row.get("has_label") is False:
            dropped["unlabelled"] += 1
            continue
        label = float(row["label_0"])
        if label == float(row["label_1"]):
            dropped["ties"] += 1
            continue
        images = [_tensor(_image(row[k], root, i, k, channels), resolution) for k in ("jpg_0", "jpg_1")]
        if images[0].shape != images[1].shape:
            raise PrefrunError(
                f"row {i}: jpg_0 is {tuple(images[0].shape)} and jpg_1 {tuple(images[1].shape)} (C, H, W); "
                "set dataset.resolution to resize both"
            )
        if winners and images[0].shape != winners[0].shape:
            raise PrefrunError(
                f"row {i}: its images are {tuple(images[0].shape)} but row 0's {tuple(winners[0].shape)} (C, H, W); "
                "set dataset.resolution to resize all"
            )
        first_wins = label > 0.5
        winners.append(images[0] if first_wins else images[1])
        losers.append(images[1] if first_wins else images[0])
        captions.append(str(row["caption"]))
    if not winners:
        raise PrefrunError(f"no Pick-a-Pic row is left after dropping {dropped['ties']} ties and unlabelled rows")
    return ImagePairs(torch.stack(winners), torch.stack(losers), None, captions), dropped


def load_pickapic(cfg: Any, seed: int) -> ImageData:
    """Pick-a-Pic rows from ``dataset.path`` (a local file, or the hub id), ``dataset.holdout`` of them held out."""
    rows, root = read_rows(str(cfg.get("path") or HUB_ID))
    if cfg.get("max_rows"):
        rows = rows[: int(cfg.max_rows)]
    channels = int(cfg.get("channels", 3))
    resolution = cfg.get("resolution")
    pairs, dropped = pickapic_pairs(rows, root, channels, int(resolution) if resolution else None)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    n_held = max(1, round(float(cfg.get("holdout", 0.1)) * len(pairs))) if len(pairs) > 1 else 0
    held, train = order[:n_held], order[n_held:]

    def take(idx: torch.Tensor) -> ImagePairs:
        return ImagePairs(pairs.winners[idx], pairs.losers[idx], None, [pairs.captions[i] for i in idx.tolist()])

    return ImageData(
        name="pickapic",
        train=take(train),
        held_out=take(held),
        shape=tuple(pairs.winners.shape[1:]),
        dropped=dropped,
    )
