"""The blobs task's oracle and guard, and Pick-a-Pic rows in the hub's schema (tests/fixtures/pickapic.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.diffusion import blobs
from prefrun.errors import PrefrunError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

BLOBS = {"image_size": 16, "classes": 2, "sigma": [1.2, 2.6], "amplitude": [1.2, 2.0], "noise": 0.05, "min_gap": 0.05}


def _blob(cx: float, size: int = 16, amplitude: float = 1.6, sigma: float = 1.8) -> torch.Tensor:
    grid = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-((grid[:, None] - 7.5) ** 2 + (grid[None, :] - cx) ** 2) / (2 * sigma**2))
    return (-1 + amplitude * g)[None, None]


def test_the_oracle_pays_for_mass_on_the_left_and_not_for_brightening_or_scaling():
    left, right = blobs.oracle_reward(_blob(4.0)), blobs.oracle_reward(_blob(11.0))
    assert left.item() > 0.4 and right.item() < -0.4
    assert blobs.oracle_reward((_blob(4.0) + 0.3).clamp(-1, 1)).item() == pytest.approx(left.item(), abs=1e-6)
    assert blobs.oracle_reward(_blob(4.0, amplitude=1.9)).item() == pytest.approx(left.item(), abs=1e-3)
    assert blobs.oracle_reward(torch.full((1, 1, 16, 16), 0.2)).item() == 0.0  # a flat image: no mass, no reward


def test_the_quality_guard_tells_blobs_from_noise_and_from_an_image_that_games_the_oracle():
    images, _ = blobs.make_blobs(256, BLOBS, torch.Generator().manual_seed(0))
    assert blobs.quality(images)["well_formed"] > 0.85
    assert blobs.quality(torch.rand(64, 1, 16, 16) * 2 - 1)["well_formed"] == 0.0
    edge = torch.full((4, 1, 16, 16), -1.0)
    edge[..., :3] = 1.0  # a bright left edge: the oracle's favourite, and no blob
    assert blobs.oracle_reward(edge).min().item() > 0.8 and blobs.quality(edge)["well_formed"] == 0.0


def test_pairs_share_a_class_rank_by_the_oracle_and_drop_near_ties():
    w, lose, c, dropped = blobs.make_pairs(200, BLOBS, torch.Generator().manual_seed(1))
    assert w.shape == lose.shape == (200, 1, 16, 16) and set(c.tolist()) == {0, 1}
    gap = blobs.oracle_reward(w) - blobs.oracle_reward(lose)
    assert gap.min().item() >= 0.05 and dropped > 0
    sigma_w, sigma_l = blobs.blob_fit(w)["sigma"], blobs.blob_fit(lose)["sigma"]
    assert (sigma_w[c == 0].mean() < sigma_w[c == 1].mean()) and (sigma_l[c == 0].mean() < sigma_l[c == 1].mean())


def _pickapic(**overrides):
    return OmegaConf.create(
        {
            "name": "pickapic",
            "path": str(FIXTURES / "pickapic.jsonl"),
            "channels": 3,
            "resolution": 16,
            "holdout": 0.0,
            "max_rows": None,
            **overrides,
        }
    )


def test_pickapic_rows_become_winner_loser_caption_pairs_with_ties_dropped():
    from prefrun.diffusion.pickapic import pickapic_pairs, read_rows

    rows, root = read_rows(str(FIXTURES / "pickapic.jsonl"))
    pairs, dropped = pickapic_pairs(rows, root, channels=3, resolution=16)
    assert dropped == {"ties": 1, "unlabelled": 0} and len(pairs) == 3
    assert pairs.captions == [
        "a red fox in the snow",
        "a lighthouse at dusk, oil painting",
        "an astronaut riding a horse",
    ]
    assert pairs.winners.shape == (3, 3, 16, 16) and -1 <= pairs.winners.min() and pairs.winners.max() <= 1
    # image k of each fixture row has channel k at 200: the winner is image 0 when label_0 = 1, image 1 otherwise
    red, green = pairs.winners[:, 0].mean(dim=(1, 2)), pairs.winners[:, 1].mean(dim=(1, 2))
    assert (red > green).tolist() == [True, False, True]


def test_pickapic_reads_the_hubs_image_bytes_from_parquet(tmp_path):
    import pandas as pd

    from prefrun.diffusion.pickapic import load_pickapic

    rows = [json.loads(line) for line in (FIXTURES / "pickapic.jsonl").read_text().splitlines()]
    for row in rows:
        for key in ("jpg_0", "jpg_1"):
            row[key] = (FIXTURES / row[key]).read_bytes()
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    data = load_pickapic(_pickapic(path=str(tmp_path / "rows.parquet"), holdout=0.34, channels=1), seed=0)
    assert data.shape == (1, 16, 16) and len(data.train) == 2 and len(data.held_out) == 1


def test_a_missing_image_file_names_its_row(tmp_path):
    from prefrun.diffusion.pickapic import load_pickapic

    rows = (FIXTURES / "pickapic.jsonl").read_text().splitlines()
    broken = json.loads(rows[1])
    broken["jpg_1"] = "pickapic_images/gone.png"
    (tmp_path / "pickapic_images").symlink_to(FIXTURES / "pickapic_images")
    (tmp_path / "rows.jsonl").write_text("\n".join([rows[0], json.dumps(broken)]) + "\n")
    with pytest.raises(PrefrunError, match=r"^row 1: jpg_1 names .*gone\.png, which does not exist") as e:
        load_pickapic(_pickapic(path=str(tmp_path / "rows.jsonl")), seed=0)
    assert "\n" not in str(e.value)


def test_images_of_mismatched_sizes_are_refused_without_a_resolution(tmp_path):
    from PIL import Image

    from prefrun.diffusion.pickapic import load_pickapic

    row = json.loads((FIXTURES / "pickapic.jsonl").read_text().splitlines()[0])
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    row["jpg_0"], row["jpg_1"] = str(FIXTURES / row["jpg_0"]), str(tmp_path / "small.png")
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(
        PrefrunError, match=r"row 0: jpg_0 is \(3, 24, 20\) and jpg_1 \(3, 10, 10\).*dataset.resolution"
    ):
        load_pickapic(_pickapic(path=str(tmp_path / "rows.jsonl"), resolution=None), seed=0)


def test_images_that_do_not_fit_the_model_name_both_fields():
    from prefrun.diffusion.data import check_fits_model
    from prefrun.diffusion.sources import build_image_data

    data = build_image_data(_pickapic(holdout=0.34), seed=0)
    model = OmegaConf.create({"name": "tiny_unet", "kind": "pixel", "in_channels": 1, "sample_size": 16})
    with pytest.raises(PrefrunError, match="3-channel images but model tiny_unet takes model.in_channels=1"):
        check_fits_model(data, model)
    model.in_channels, model.sample_size = 3, 8
    with pytest.raises(PrefrunError, match=r"16×16 images but model tiny_unet takes model.sample_size=8"):
        check_fits_model(data, model)
