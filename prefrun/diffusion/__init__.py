"""Preference optimization of diffusion models (task=diffusion): Diffusion-DPO, MaPO and the SFT baseline.

    models.py      the tiny pixel UNet (diffusers UNet2DModel), the SD 1.5 / SDXL presets' loaders, LoRA
    blobs.py       the synthetic image task: single-blob images, its oracle and its quality guard
    pickapic.py    Pick-a-Pic v2 rows (caption, two images, label, ties) from the hub or local files
    data.py        image pairs, the one container both datasets fill (sources.py: by dataset name)
    trainer.py     denoising errors (one routine) and the transformers Trainer that trains on them
    reference.py   the reference UNet pretrained on the synthetic distribution, cached by content key
    sampling.py    DDIM sampling from given initial noise
    evaluation.py  oracle reward, win rate, held-out implicit accuracy, the quality guard, the sample grid

diffusers is imported inside these modules only, so text runs and ``prefrun --help`` never load it.
"""
