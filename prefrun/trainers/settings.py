"""Typed settings of preference training and the one builder of TRL's DPOConfig from them.

``TrainSettings.from_config(cfg)`` is the only place that reads the run config for training: the
trainers below it see these fields (and the model / diagnostics / objective sub-configs they pass on),
never the whole config. ``dpo_config`` is the only DPOConfig builder: runs, the benchmark and the tests
all use it, so a setting changes in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from prefrun.runtime.distributed import batch_layout


@dataclass(frozen=True)
class TrainSettings:
    """What one preference-training stage needs; defaults are those of a fast CPU test."""

    steps: int = 10
    batch_size: int = 8  # global batch: prompts per optimizer step, each with its K responses
    per_device_batch_size: int | None = None  # None = batch_size (one process, no accumulation)
    gradient_accumulation_steps: int = 1
    lr: float = 1e-5
    warmup_steps: int = 0
    scheduler: str = "constant"
    optimizer: str = "adamw_torch"
    logging_steps: int = 1
    max_prompt_len: int = 128
    max_response_len: int = 128
    shared_prompt: str = "auto"  # auto | on | off
    seed: int = 0
    checkpoint_steps: int = 0  # 0 = no mid-training checkpoints
    resume: bool = True
    cache_reference: bool = True
    cache_dir: str = "outputs/.cache"
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False
    engine: dict[str, Any] = field(default_factory=dict)  # DPOConfig's distributed fields (ddp, fsdp, deepspeed)
    model: Any = None  # the model sub-config: loading, dtype, LoRA
    entanglement: Any = None  # diagnostics.gradient_entanglement
    objective_cfg: Any = None  # the objective sub-config (BCO's UDM settings)

    @classmethod
    def from_config(cls, cfg: Any) -> TrainSettings:
        """The training settings of a composed run config (global batch split over ranks by batch_layout).

        Ranges and types were checked by the task's check() before this is called.
        """
        per_device, accumulation = batch_layout(cfg)  # a global batch that does not divide is a PrefrunError
        return cls(
            steps=int(cfg.train.steps),
            batch_size=int(cfg.train.batch_size),
            per_device_batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            lr=float(cfg.train.lr),
            warmup_steps=int(cfg.train.warmup_steps),
            scheduler=cfg.train.scheduler,
            optimizer=cfg.train.optimizer,
            logging_steps=int(cfg.train.logging_steps),
            max_prompt_len=int(cfg.train.max_prompt_len),
            max_response_len=int(cfg.train.max_response_len),
            shared_prompt=str(cfg.train.shared_prompt),
            seed=int(cfg.seed),
            checkpoint_steps=int(cfg.run.get("checkpoint_steps") or 0),
            resume=bool(cfg.run.resume),
            cache_reference=cfg.cache.reference in ("on", True),
            cache_dir=str(cfg.paths.cache_dir),
            mixed_precision=str(cfg.hardware.mixed_precision),
            gradient_checkpointing=bool(cfg.hardware.gradient_checkpointing),
            engine=engine_settings(cfg.hardware),
            model=cfg.model,
            entanglement=cfg.diagnostics.gradient_entanglement,
            objective_cfg=cfg.objective,
        )

    def with_steps(self, steps: int) -> TrainSettings:
        return replace(self, steps=steps)


def engine_settings(hardware_cfg: Any) -> dict[str, Any]:
    """DPOConfig's distributed fields from the hardware group: backend, timeout, FSDP or DeepSpeed."""
    hw = hardware_cfg
    engine: dict[str, Any] = {}
    if hw.get("backend"):
        engine["ddp_backend"] = hw.backend
    if hw.get("ddp_timeout_s"):
        engine["ddp_timeout"] = int(hw.ddp_timeout_s)  # rank 0 precomputes reference log-probs meanwhile
    if hw.get("fsdp"):
        engine["fsdp"] = True
        engine["fsdp_config"] = OmegaConf.to_container(hw.fsdp, resolve=True)
    if hw.get("deepspeed"):
        engine["deepspeed"] = OmegaConf.to_container(hw.deepspeed, resolve=True)
    if engine.get("fsdp") or engine.get("deepspeed"):
        engine["ddp_find_unused_parameters"] = None
    elif hw.get("num_processes", 1) * hw.get("num_nodes", 1) > 1:
        engine["ddp_find_unused_parameters"] = False  # every parameter gets a gradient each step
    return engine


def trainer_fields(settings: TrainSettings, output_dir: str | Path, device: str = "cpu") -> dict[str, Any]:
    """The TrainingArguments fields every prefrun trainer shares (DPOConfig, RewardConfig): steps, batch layout,
    optimizer, checkpoints, precision, seeds, engine."""
    from prefrun.runtime.tracking import report_to

    s = settings
    return dict(
        output_dir=str(output_dir),
        max_steps=s.steps,
        per_device_train_batch_size=s.per_device_batch_size or s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        learning_rate=s.lr,
        lr_scheduler_type=s.scheduler,
        warmup_steps=s.warmup_steps,
        optim=s.optimizer,
        logging_steps=s.logging_steps,
        save_strategy="steps" if s.checkpoint_steps else "no",
        save_steps=s.checkpoint_steps or 500,
        save_total_limit=1,  # the newest complete checkpoint; the older one goes only after it is written
        report_to=report_to(),
        use_cpu=device == "cpu",
        # TRL's configs turn bf16 autocast on even with use_cpu: set precision explicitly.
        bf16=s.mixed_precision == "bf16" and device != "cpu",
        fp16=s.mixed_precision == "fp16" and device != "cpu",
        activation_checkpointing=s.gradient_checkpointing,
        seed=s.seed,
        data_seed=s.seed,
        disable_tqdm=True,
        remove_unused_columns=False,
        max_length=None,  # responses are cut when tokenized (train.max_prompt_len / max_response_len), never dropped
        dataloader_num_workers=0,
        save_only_model=False,
        **s.engine,
    )


def dpo_config(settings: TrainSettings, output_dir: str | Path, device: str = "cpu", **overrides: Any) -> Any:
    """TRL's DPOConfig for ``settings``; ``overrides`` replace single fields (tests, benchmarks)."""
    from trl import DPOConfig

    fields = trainer_fields(settings, output_dir, device)
    fields.update(precompute_ref_log_probs=True, precompute_ref_batch_size=max(settings.batch_size, 64))
    fields.update(overrides)
    return DPOConfig(**fields)
