"""Stable Diffusion in latent space: pair images → VAE latents, captions → text-encoder states, encoded once.

Diffusion-DPO and MaPO train only the U-Net; the VAE and the text encoders are frozen (Wallace et al. 2023;
the diffusers research example). So prefrun encodes every pair once, before training, and the trainer sees
latent pairs with their text condition exactly as it sees pixel pairs with their class:

    latent = vae.encode(x).latent_dist.mean · vae.config.scaling_factor     (x in [−1, 1])

The example draws ``latent_dist.sample()`` afresh every step; the posterior mean is the deterministic choice
here (a resumed run and the reference see the same latents), and with SD's VAE the posterior's std is small
next to the data (≈ 1e-2 of the latents' scale). Captions, as the example encodes them:

- SD 1.5: ``text_encoder(tokenizer(caption, padding="max_length", max_length=77))[0]`` → encoder_hidden_states;
- SDXL: both encoders' penultimate hidden states, concatenated on the feature axis; the second encoder's
  pooled projection as ``text_embeds``; ``time_ids`` = (original H, W, crop top, left, target H, W) =
  (R, R, 0, 0, R, R) for images resized and centre-cropped to R (the pickapic loader's, so no crop offset is
  known: 0, as the example uses for centre crops of square targets).
"""

from __future__ import annotations

from typing import Any

import torch

from prefrun.diffusion.data import ImageData, ImagePairs

TEXT_KEYS = ("encoder_hidden_states", "text_embeds", "time_ids")


@torch.no_grad()
def encode_images(vae: Any, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Latents [N, c, H/f, W/f] of images [N, 3, H, W] in [−1, 1]: the posterior mean times the scaling factor."""
    device = next(vae.parameters()).device
    scale = float(vae.config.scaling_factor)
    out = [
        vae.encode(images[i : i + batch_size].to(device)).latent_dist.mean.float().cpu() * scale
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def _tokens(tokenizer: Any, captions: list[str], device: Any) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)


@torch.no_grad()
def encode_captions(parts: dict[str, Any], pipeline: str, captions: list[str], resolution: int,
                    batch_size: int = 8) -> dict[str, torch.Tensor]:  # fmt: skip
    """The U-Net's text condition of each caption (the module docstring's recipe per pipeline)."""
    encoder = parts["text_encoder"]
    device = next(encoder.parameters()).device
    chunks: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(captions), batch_size):
        batch = captions[i : i + batch_size]
        if pipeline == "sdxl":
            first = encoder(_tokens(parts["tokenizer"], batch, device), output_hidden_states=True)
            second = parts["text_encoder_2"](_tokens(parts["tokenizer_2"], batch, device), output_hidden_states=True)
            states = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
            size = float(resolution)
            time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]]).expand(len(batch), 6)
            values = {"encoder_hidden_states": states, "text_embeds": second.text_embeds, "time_ids": time_ids}
        else:
            values = {"encoder_hidden_states": encoder(_tokens(parts["tokenizer"], batch, device))[0]}
        for key, value in values.items():
            chunks.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(parts_) for key, parts_ in chunks.items()}


def encode_pairs(parts: dict[str, Any], pipeline: str, pairs: ImagePairs, resolution: int,
                 batch_size: int = 8) -> ImagePairs:  # fmt: skip
    """The pairs as latents with their captions' text condition (``condition``)."""
    if not pairs.captions:
        raise ValueError("latent pairs need captions")
    return ImagePairs(
        encode_images(parts["vae"], pairs.winners, batch_size),
        encode_images(parts["vae"], pairs.losers, batch_size),
        None,
        pairs.captions,
        condition=encode_captions(parts, pipeline, pairs.captions, resolution, batch_size),
    )


def encode_data(parts: dict[str, Any], pipeline: str, data: ImageData, resolution: int) -> ImageData:
    """``data`` with its train and held-out pairs in latent space (shape: the latents')."""
    train = encode_pairs(parts, pipeline, data.train, resolution)
    held = encode_pairs(parts, pipeline, data.held_out, resolution) if len(data.held_out) else data.held_out
    return ImageData(
        name=data.name,
        train=train,
        held_out=held,
        shape=tuple(train.winners.shape[1:]),
        dropped=data.dropped,
        fingerprint=data.fingerprint,
    )
