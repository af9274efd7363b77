"""model=sd15 / model=sdxl train in latent space, on pipelines of the real layout with tiny random parts built here
(unet/, vae/, text_encoder/, tokenizer/, scheduler/ (+ text_encoder_2/, tokenizer_2/) saved by save_pretrained):
the pairs are encoded once by the frozen VAE and text encoders as the diffusers example encodes them, the U-Net
trains (LoRA or full), is saved and reloads, and held-out implicit accuracy is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefrun.runner import run

from .test_task import compose_cfg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RESOLUTION = 16


def _tokenizer(directory: Path) -> int:
    """A CLIP tokenizer over single characters (printable ASCII, with and without the word end); its vocab size."""
    from transformers import CLIPTokenizer

    chars = [chr(c) for c in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16).save_pretrained(directory)
    return len(vocab)


def _pipeline(root: Path, pipeline: str) -> Path:
    """A tiny pipeline directory in the hub's layout (random weights, seeded)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    vocab = _tokenizer(root / "tokenizer")
    text = dict(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=16, projection_dim=8, bos_token_id=vocab - 2,
                eos_token_id=vocab - 1)  # fmt: skip
    CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(root / "text_encoder")
    unet_extra: dict = {"cross_attention_dim": 16}
    if pipeline == "sdxl":
        _tokenizer(root / "tokenizer_2")
        CLIPTextModelWithProjection(CLIPTextConfig(**text)).save_pretrained(root / "text_encoder_2")
        unet_extra = {"cross_attention_dim": 32, "addition_embed_type": "text_time", "addition_time_embed_dim": 4,
                      "projection_class_embeddings_input_dim": 8 + 6 * 4}  # fmt: skip
    UNet2DConditionModel(
        sample_size=RESOLUTION // 2, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4, attention_head_dim=2, **unet_extra,
    ).save_pretrained(root / "unet")  # fmt: skip
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=RESOLUTION,
    ).save_pretrained(root / "vae")  # fmt: skip
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(root / "scheduler")
    return root


def _overrides(path: Path, pipeline: str, *extra: str) -> list[str]:
    return [
        "task=diffusion", f"model={'sdxl' if pipeline == 'sdxl' else 'sd15'}", f"model.path={path}",
        "model.vae_path=null", f"model.resolution={RESOLUTION}", "model.dtype=float32", "dataset=pickapic",
        f"dataset.path={FIXTURES / 'pickapic.jsonl'}", f"dataset.resolution={RESOLUTION}", "dataset.holdout=0.5",
        "train.steps=4", "train.batch_size=1", "train.logging_steps=1", "train.lr=1e-3", "logger=none",
        "hardware.threads=1", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("pipeline", ["sd15", "sdxl"])
def test_a_pipeline_trains_its_lora_on_latent_pairs_saves_it_and_reports_implicit_accuracy(tmp_path, pipeline):
    from prefrun.diffusion.models import load_unet

    root = _pipeline(tmp_path / "pipe", pipeline)
    overrides = _overrides(root, pipeline)
    results = run(compose_cfg(tmp_path, tmp_path / "cache", *overrides), tmp_path / "run", overrides=overrides)
    assert 0.0 <= results["eval"]["implicit_acc"] <= 1.0
    assert results["training"]["lora"] and not results["training"]["reference_in_memory"]
    assert results["training"]["reference_forwards"] == results["training"]["policy_forwards"] == 4
    saved = load_unet(tmp_path / "run" / "model")  # the adapter onto the pipeline's own U-Net
    base = load_unet(root, subfolder="unet")
    trained = {k: v for k, v in saved.state_dict().items() if "lora_B" in k}
    assert trained and any(v.abs().sum() > 0 for v in trained.values())  # LoRA B starts at zero: it trained
    assert type(saved) is type(base)


def test_latents_and_text_states_are_the_vae_mean_and_the_text_encoder_output(tmp_path):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    from prefrun.diffusion.latent import encode_captions, encode_images

    root = _pipeline(tmp_path / "pipe", "sd15")
    vae = AutoencoderKL.from_pretrained(root / "vae")
    images = torch.rand(3, 3, RESOLUTION, RESOLUTION) * 2 - 1
    want = vae.encode(images).latent_dist.mean * vae.config.scaling_factor  # independently, all at once
    torch.testing.assert_close(encode_images(vae, images, batch_size=2), want.detach(), atol=1e-5, rtol=0)
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(root / "text_encoder")
    captions = ["a red fox", "two cats on a mat", "x"]
    ids = tokenizer(captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    got = encode_captions({"text_encoder": encoder, "tokenizer": tokenizer}, "sd15", captions, RESOLUTION, batch_size=2)
    torch.testing.assert_close(got["encoder_hidden_states"], encoder(ids)[0].detach(), atol=1e-5, rtol=0)


def test_a_latent_pipeline_with_a_resolution_other_than_its_datas_is_refused_in_one_line(tmp_path):
    from prefrun.errors import PrefrunError
    from prefrun.tasks.diffusion import DiffusionTask

    root = _pipeline(tmp_path / "pipe", "sd15")
    cfg = compose_cfg(tmp_path, tmp_path / "cache", *_overrides(root, "sd15", "dataset.resolution=32"))
    with pytest.raises(PrefrunError, match=r"^dataset.resolution=32 but model sd15 generates at model.resolution=16"):
        DiffusionTask().check(cfg)
    blobs = [o for o in _overrides(root, "sd15") if not o.startswith("dataset")] + ["dataset=blobs"]
    cfg = compose_cfg(tmp_path, tmp_path / "cache", *blobs)
    with pytest.raises(PrefrunError, match=r"^model=sd15 is a text-to-image pipeline and dataset=blobs has no capt"):
        DiffusionTask().check(cfg)


def test_without_lora_the_whole_unet_trains_against_a_frozen_copy_and_saves_whole(tmp_path):
    from prefrun.diffusion.models import load_unet

    root = _pipeline(tmp_path / "pipe", "sd15")
    overrides = _overrides(root, "sd15", "model.peft=null")
    results = run(compose_cfg(tmp_path, tmp_path / "cache", *overrides), tmp_path / "run", overrides=overrides)
    assert results["training"]["reference_in_memory"] and not results["training"]["lora"]
    saved, base = load_unet(tmp_path / "run" / "model"), load_unet(root, subfolder="unet")
    assert type(saved).__name__ == "UNet2DConditionModel"
    moved = [k for k, v in base.state_dict().items() if not torch.equal(v, saved.state_dict()[k])]
    assert moved  # the policy trained; the reference (the pipeline's U-Net) is what it started from
