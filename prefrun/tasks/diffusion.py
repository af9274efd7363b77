"""The diffusion task: image pairs → cached reference UNet → preference training → saved UNet → evaluation.

    prefrun task=diffusion                                   # Diffusion-DPO on blobs with the tiny UNet
    prefrun task=diffusion objective=mapo                    # MaPO (reference-free)
    prefrun task=diffusion objective=diffusion_sft           # the SFT-on-winners baseline
    prefrun task=diffusion dataset=pickapic dataset.path=rows.jsonl

The reference is the tiny UNet pretrained on the task's images (the ``sft`` settings; cached by content key,
so a sweep trains it once); the policy starts from it. Training, checkpoints, resume, metrics.jsonl, W&B and
progress are the text trainers' (``prefrun.diffusion.trainer``). Evaluation (``diffusion.eval``): the
oracle's reward of policy vs reference samples from the same noise, the win rate, held-out implicit
accuracy and the quality guard (``prefrun.diffusion.evaluation``); a grid of samples in plots/samples.png.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.errors import PrefrunError
from prefrun.objectives.config import build_objective
from prefrun.tasks import TASKS
from prefrun.tasks.base import RunContext

log = logging.getLogger("prefrun")

UNET_MODELS = "tiny_unet|sd15|sdxl"
PREDICTION_TYPES = ("epsilon",)  # both reference codes assert it; ℓ is the noise-prediction error


def _reference_recipe(cfg: DictConfig) -> dict[str, Any]:
    return {k: cfg.sft[k] for k in ("steps", "batch_size", "lr", "warmup_steps")}


def reference_dir(cfg: DictConfig, data: Any, run_dir: Path | None = None) -> Path:
    """The cached pretrained reference UNet of this model and dataset (trained here when it is missing)."""
    from prefrun.diffusion.models import noise_scheduler, tiny_unet
    from prefrun.diffusion.reference import pretrained_reference, reference_key

    model = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in ("peft", "lora")}
    schedule = OmegaConf.to_container(cfg.diffusion.scheduler, resolve=True)
    key = reference_key(
        {**model, "classes": data.num_classes},
        {"name": data.name, **(data.fingerprint or {"pairs": len(data.train)})},
        {**_reference_recipe(cfg), "scheduler": schedule},
    )

    def train(unet: Any, out: Path) -> None:
        _pretrain(cfg, data, unet, noise_scheduler(cfg.diffusion.scheduler), out)

    return pretrained_reference(
        lambda: tiny_unet(cfg.model, data.num_classes),
        train,
        key=key,
        cache_dir=Path(cfg.paths.cache_dir) / "diffusion",
        run_dir=run_dir,
    )


def _pretrain(cfg: DictConfig, data: Any, unet: Any, scheduler: Any, out: Path) -> None:
    """Denoising-loss pretraining of ``unet`` on the task's images into ``out`` (weights + its training log)."""
    import shutil

    import torch

    from prefrun.diffusion.reference import LOG_NAME
    from prefrun.diffusion.trainer import DiffusionTrainer, PairDataset, training_arguments
    from prefrun.results.metrics_log import MetricsFile, MetricsFileCallback
    from prefrun.results.progress import attach_progress, stage_message
    from prefrun.tasks.steps import device_of
    from prefrun.trainers.settings import TrainSettings

    recipe = _reference_recipe(cfg)
    stage_message(f"reference UNet: pretraining {recipe['steps']:,} steps on {data.name} images")
    if data.pretrain is not None:
        images, classes = data.pretrain
    else:  # a dataset of pairs only: the reference learns all of its training images
        images = torch.cat([data.train.winners, data.train.losers])
        classes = None if data.train.classes is None else torch.cat([data.train.classes] * 2)
    steps = int(recipe["steps"])
    settings = TrainSettings(
        steps=steps,
        batch_size=int(recipe["batch_size"]),
        lr=float(recipe["lr"]),
        warmup_steps=int(recipe["warmup_steps"]),
        scheduler="cosine",
        logging_steps=max(1, steps // 10),
        seed=0,
    )
    out.mkdir(parents=True, exist_ok=True)
    args = training_arguments(settings, out / "trainer", device_of(cfg), report_to=[])
    trainer = DiffusionTrainer(
        model=unet,
        args=args,
        train_dataset=PairDataset(images, None, classes),
        objective=None,
        noise_scheduler=scheduler,
        callbacks=[MetricsFileCallback(MetricsFile(out / LOG_NAME), "sft")],
    )
    attach_progress(trainer, "reference")
    trainer.train()
    unet.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "trainer", ignore_errors=True)


@TASKS.register("diffusion")
class DiffusionTask:
    name = "diffusion"
    stage_labels = {
        "build_s": "build",
        "sft_s": "reference",
        "train_s": "training",
        "save_s": "save",
        "eval_s": "eval",
    }

    def check(self, cfg: DictConfig) -> None:
        from prefrun.diffusion.data import IMAGE_DATASETS
        from prefrun.tasks.settings_check import check_settings
        from prefrun.trainers.settings import TrainSettings

        check_settings(cfg)
        build_objective(cfg.objective, trains="diffusion")
        model = cfg.model
        if "kind" not in model:
            raise PrefrunError(
                f"model={model.name} is a language model; task=diffusion trains a UNet: model=<{UNET_MODELS}>"
            )
        if cfg.dataset.name not in IMAGE_DATASETS:
            raise PrefrunError(
                f"dataset={cfg.dataset.name} holds text; task=diffusion needs image pairs: "
                f"dataset=<{'|'.join(IMAGE_DATASETS)}>"
            )
        prediction = str(model.get("prediction_type", "epsilon"))
        if prediction not in PREDICTION_TYPES:
            raise PrefrunError(
                f"model.prediction_type={prediction}: objective={cfg.objective.name} compares noise-prediction errors "
                "and assumes prediction_type=epsilon (as Diffusion-DPO's and MaPO's code do); set "
                "model.prediction_type=epsilon"
            )
        if cfg.curriculum.name != "none":
            raise PrefrunError(f"curriculum={cfg.curriculum.name} orders text pairs; task=diffusion takes none")
        if int(cfg.hardware.get("num_processes", 1)) * int(cfg.hardware.get("num_nodes", 1)) > 1:
            raise PrefrunError("task=diffusion runs in one process; use hardware=cpu or hardware=gpu")
        TrainSettings.from_config(cfg)
        if str(model.kind) == "latent":
            from prefrun.diffusion.models import check_components_available

            check_components_available(model)  # offline without a cached copy: one line, now
            if cfg.dataset.name != "pickapic":
                raise PrefrunError(
                    f"model={model.name} is a text-to-image pipeline and dataset={cfg.dataset.name} has no captions: "
                    "use dataset=pickapic (or model=tiny_unet)"
                )
            if cfg.dataset.get("resolution") is not None and int(cfg.dataset.resolution) != int(model.resolution):
                raise PrefrunError(
                    f"dataset.resolution={cfg.dataset.resolution} but model {model.name} generates at "
                    f"model.resolution={model.resolution}; set dataset.resolution={model.resolution}"
                )

    def prepare(self, cfg: DictConfig) -> None:
        """The data and the cached reference UNet, before anything else runs."""
        from prefrun.diffusion.data import check_fits_model
        from prefrun.diffusion.sources import build_image_data

        data = build_image_data(cfg.dataset, cfg.seed)
        check_fits_model(data, cfg.model)
        if str(cfg.model.kind) != "latent":  # a latent pipeline's reference is its own U-Net: nothing to pretrain
            reference_dir(cfg, data)

    def run(self, cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
        from prefrun.diffusion.data import check_fits_model
        from prefrun.diffusion.models import add_lora, load_unet, noise_scheduler, save_unet
        from prefrun.diffusion.sources import build_image_data

        objective = build_objective(cfg.objective, trains="diffusion")
        if str(cfg.model.kind) == "latent":
            return _run_latent(cfg, objective, ctx)
        with ctx.stage("build_s"):
            data = build_image_data(cfg.dataset, cfg.seed)
            check_fits_model(data, cfg.model)
            log.info(
                "%s: %d training pairs, %d held out, dropped %s",
                data.name,
                len(data.train),
                len(data.held_out),
                data.dropped,
            )
        with ctx.stage("sft_s"):
            ref_path = reference_dir(cfg, data, ctx.run_dir)
        scheduler = noise_scheduler(cfg.diffusion.scheduler, str(cfg.model.get("prediction_type", "epsilon")))
        with ctx.stage("train_s"):
            policy = load_unet(ref_path).to(ctx.device)
            if cfg.model.get("peft") == "lora":
                add_lora(policy, cfg.model.lora)
            reference = None  # under LoRA the reference is the adapter turned off
            if objective.needs_reference and cfg.model.get("peft") != "lora":
                reference = load_unet(ref_path).to(ctx.device).eval().requires_grad_(False)
            policy, stats = _train(cfg, objective, data, policy, reference, scheduler, ctx)
        saved_model = None
        if cfg.run.save_model:
            from prefrun.models.saving import directory_size

            with ctx.stage("save_s"):
                path = save_unet(policy, scheduler, ctx.run_dir, reference=str(ref_path))
                saved_model = {"path": str(path), "bytes": directory_size(path), "adapter": bool(cfg.model.get("peft"))}
        with ctx.stage("eval_s"):
            metrics, rows, grid = _evaluate(cfg, policy, load_unet(ref_path), scheduler, data, ctx)
        from prefrun.results.metrics_log import training_summary

        return {
            "objective": objective.name,
            "hparams": dict(objective.hparams),
            "train": {"lr": cfg.train.lr, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size},
            "reference_path": str(ref_path),
            "reference_label": "reference",
            "model_dir": saved_model,
            "eval": metrics,
            "eval_rows": rows,
            "samples_png": str(grid) if grid else None,
            "training": stats,
            "training_summary": training_summary(ctx.run_dir / "metrics.jsonl"),
            "data": {"train_pairs": len(data.train), "held_out_pairs": len(data.held_out), "dropped": data.dropped},
        }


def _train(cfg: DictConfig, objective: Any, data: Any, policy: Any, reference: Any, scheduler: Any, ctx: RunContext):
    """Preference training of ``policy`` against ``reference`` (None: the adapter turned off, or no reference);
    (trained UNet, stats)."""
    import torch

    from prefrun.diffusion.models import has_lora
    from prefrun.diffusion.trainer import DiffusionTrainer, PairDataset, training_arguments
    from prefrun.results.metrics_log import MetricsFile, MetricsFileCallback
    from prefrun.results.progress import attach_progress
    from prefrun.runtime.checkpoints import last_complete_checkpoint, train_resumable
    from prefrun.trainers.settings import TrainSettings

    settings = TrainSettings.from_config(cfg)
    torch.manual_seed(settings.seed)
    lora = has_lora(policy)
    args = training_arguments(settings, ctx.run_dir / "checkpoints", ctx.device)
    trainer = DiffusionTrainer(
        model=policy,
        args=args,
        train_dataset=PairDataset(data.train.winners, data.train.losers, data.train.classes, data.train.condition),
        objective=objective,
        noise_scheduler=scheduler,
        reference=reference,
        callbacks=[MetricsFileCallback(MetricsFile(ctx.run_dir / "metrics.jsonl"), "train", ctx.main_process)],
    )
    attach_progress(trainer, "train")
    resume_from = last_complete_checkpoint(args.output_dir) if settings.resume else None
    train_resumable(trainer, resume_from)
    history = trainer.state.log_history
    stats = {
        "pairs": len(data.train),
        "policy_forwards": trainer.policy_forwards,
        "reference_forwards": trainer.reference_forwards,
        "reference_in_memory": reference is not None,
        "lora": lora,
        "train_runtime_s": history[-1].get("train_runtime") if history else None,
        "resumed_from": resume_from.name if resume_from else None,
    }
    return trainer.accelerator.unwrap_model(trainer.model).eval(), stats


def _evaluate(cfg: DictConfig, policy: Any, reference: Any, scheduler: Any, data: Any, ctx: RunContext):
    """The evaluation's metrics and rows, and the sample grid (plots/samples.png, logged to W&B when open)."""
    import sys

    from prefrun.diffusion.evaluation import evaluate, sample_grid

    device = ctx.device
    metrics, rows, samples = evaluate(
        policy.to(device), reference.to(device).requires_grad_(False), scheduler, data, cfg.diffusion.eval, ctx.run_dir
    )
    grid = None
    if ctx.main_process:
        grid = sample_grid(samples, ctx.run_dir / "plots" / "samples.png")
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.log({"samples": wandb.Image(str(grid), caption="reference (left) vs policy (right), same noise")})
    return metrics, rows, grid


def _run_latent(cfg: DictConfig, objective: Any, ctx: RunContext) -> dict[str, Any]:
    """A Stable Diffusion pipeline (``model.kind=latent``): pairs encoded once into latents and text conditions,
    the U-Net trained on them (its LoRA adapter under ``model.peft=lora``; the reference is then the adapter
    turned off, else a frozen copy), saved, and evaluated by held-out implicit accuracy (Pick-a-Pic has no
    oracle to score samples with)."""
    import copy

    from prefrun.diffusion.evaluation import implicit_accuracy
    from prefrun.diffusion.latent import encode_data
    from prefrun.diffusion.models import load_components, save_unet
    from prefrun.diffusion.sources import build_image_data
    from prefrun.results.metrics_log import training_summary

    with ctx.stage("build_s"):
        pixels = build_image_data(cfg.dataset, cfg.seed)
        parts = load_components(cfg.model)
        for name in ("vae", "text_encoder", "text_encoder_2"):
            if name in parts:
                parts[name].to(ctx.device).eval()
        data = encode_data(parts, str(cfg.model.pipeline), pixels, int(cfg.model.resolution))
        log.info("%s: %d training pairs, %d held out, latents %s", data.name, len(data.train), len(data.held_out),
                 tuple(data.shape))  # fmt: skip
    scheduler = parts["scheduler"]  # the pipeline's own training schedule
    policy = parts["unet"].to(ctx.device)
    reference = None
    if objective.needs_reference and cfg.model.get("peft") != "lora":
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
    with ctx.stage("train_s"):
        policy, stats = _train(cfg, objective, data, policy, reference, scheduler, ctx)
    saved_model = None
    if cfg.run.save_model:
        from prefrun.models.saving import directory_size

        with ctx.stage("save_s"):
            path = save_unet(policy, scheduler, ctx.run_dir, reference=str(cfg.model.path), base_subfolder="unet")
            saved_model = {"path": str(path), "bytes": directory_size(path), "adapter": bool(cfg.model.get("peft"))}
    metrics: dict[str, float] = {}
    with ctx.stage("eval_s"):
        if len(data.held_out):
            settings = cfg.diffusion.eval
            metrics["implicit_acc"] = implicit_accuracy(
                policy, reference, scheduler, data, int(settings.implicit_timesteps), int(settings.seed),
                batch_size=int(settings.batch_size),
            )  # fmt: skip
    return {
        "objective": objective.name,
        "hparams": dict(objective.hparams),
        "train": {"lr": cfg.train.lr, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size},
        "reference_path": str(cfg.model.path),
        "reference_label": "reference",
        "model_dir": saved_model,
        "eval": metrics,
        "eval_rows": [["held-out implicit acc", "", f"{v:.3f}"] for k, v in metrics.items()],
        "training": stats,
        "training_summary": training_summary(ctx.run_dir / "metrics.jsonl"),
        "data": {"train_pairs": len(data.train), "held_out_pairs": len(data.held_out), "dropped": data.dropped},
    }
