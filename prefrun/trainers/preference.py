"""Preference training of one run: tokenized records → ListTrainer → trained policy.

Builds TRL's DPOConfig from the run config (hardware, precision, batch, schedule), the reference
log-prob cache, the metrics.jsonl and W&B logging, and returns the trained policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.data.records import Record, prompts_of
from prefrun.data.tokenize import tokenize_record
from prefrun.launch import is_main_process, preemption_callback, rank0_first, resume_checkpoint
from prefrun.objectives import Objective
from prefrun.results.metrics_log import MetricsFile, MetricsFileCallback

EXTRA_FIELDS = ("labels", "p_chosen", "baseline_logps")


def tokenized_dataset(records: list[Record], tokenizer: Any, cfg: DictConfig, joint: bool = False) -> Any:
    """A datasets.Dataset of prompt_ids, response_ids[K], scores[K] (+ labels, p_chosen when present).

    ``joint``: prompts start with BOS, as their tokens will be scored (see tokenize_record).
    """
    from datasets import Dataset

    if any("prompts" in r for r in records):  # one column layout for all rows: per-response prompts everywhere
        records = [{**r, "prompts": prompts_of(r)} for r in records]
    rows = []
    for record in records:
        row = tokenize_record(record, tokenizer, cfg.train.max_prompt_len, cfg.train.max_response_len, joint)
        row["scores"] = record["scores"]
        for name in EXTRA_FIELDS:
            if name in record:
                row[name] = record[name]
        rows.append(row)
    return Dataset.from_list(rows)


def dpo_config(cfg: DictConfig, output_dir: Path, steps: int, device: str, report_to: list[str]) -> Any:
    from trl import DPOConfig

    from prefrun.launch import batch_layout

    hw = cfg.hardware
    # --- hardware group (issue 5): global batch split over ranks, engines, checkpoints --------------------
    per_device, accumulation = batch_layout(cfg)  # a global batch that does not divide is a PrefrunError
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
    checkpoint_steps = cfg.run.get("checkpoint_steps") or 0
    # ------------------------------------------------------------------------------------------------------
    return DPOConfig(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        learning_rate=cfg.train.lr,
        lr_scheduler_type=cfg.train.scheduler,
        warmup_steps=cfg.train.warmup_steps,
        optim=cfg.train.optimizer,
        logging_steps=cfg.train.logging_steps,
        save_strategy="steps" if checkpoint_steps else "no",
        save_steps=checkpoint_steps or 500,
        save_total_limit=1,  # the newest complete checkpoint; the older one goes only after it is written
        report_to=report_to,
        use_cpu=device == "cpu",
        # TRL's config turns bf16 autocast on even with use_cpu: set precision explicitly.
        bf16=hw.mixed_precision == "bf16" and device != "cpu",
        fp16=hw.mixed_precision == "fp16" and device != "cpu",
        activation_checkpointing=hw.gradient_checkpointing,
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=True,
        remove_unused_columns=False,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=max(cfg.train.batch_size, 64),
        max_length=None,
        dataloader_num_workers=0,
        save_only_model=False,
        **engine,
    )


def init_wandb(cfg: DictConfig, run_dir: Path) -> list[str]:
    """Start the W&B run (offline unless logged in) inside the run directory; [] when logger=none."""
    if cfg.logger.name != "wandb":
        return []
    import os

    import wandb

    from prefrun.run import wandb_mode

    os.environ.setdefault("WANDB_SILENT", "true")
    if wandb.run is not None:  # a later stage of the same run (curricula) logs into the same W&B run
        return ["wandb"]
    name = (
        run_dir.relative_to(Path(cfg.paths.output_dir)).as_posix()
        if run_dir.is_relative_to(Path(cfg.paths.output_dir))
        else run_dir.name
    )
    wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        tags=list(cfg.logger.tags),
        name=name,
        dir=str(run_dir),
        mode=wandb_mode(cfg.logger.mode),
        config=OmegaConf.to_container(cfg, resolve=True),
        reinit="finish_previous",
    )
    return ["wandb"]


def train_preference(
    cfg: DictConfig,
    objective: Objective,
    records: list[Record],
    reference_path: str,
    run_dir: Path,
    device: str,
    *,
    steps: int | None = None,
    sequential: bool = False,
    stage: str = "train",
) -> tuple[Any, Any, dict[str, Any]]:
    """Train ``objective`` from the model at ``reference_path``, which is also the reference.

    Returns (policy, tokenizer, stats). ``steps`` defaults to train.steps;
    ``sequential`` keeps the records' order (curricula); ``stage`` tags metrics.jsonl lines.
    """
    import torch

    from prefrun.data.shared_prompt import use_shared_prompt
    from prefrun.models.loading import load_model_and_tokenizer, lora_config
    from prefrun.trainers.density_ratio import with_udm_weights
    from prefrun.trainers.list_trainer import ListTrainer
    from prefrun.trainers.ref_cache import ReferenceCache, model_fingerprint, tokenizer_fingerprint

    torch.manual_seed(cfg.seed)
    policy, tokenizer = load_model_and_tokenizer(reference_path, cfg.model, device)
    joint = objective.spec.joint
    dataset = tokenized_dataset(records, tokenizer, cfg, joint=joint)
    shared_prompt = use_shared_prompt(cfg.train.shared_prompt, dataset, objective.spec)
    ref_cache = None
    if cfg.cache.reference in ("on", True) and objective.needs_reference:
        # The packing is part of the key: shared and unshared log-probs differ in the last float bits.
        ref_cache = ReferenceCache(
            Path(cfg.paths.cache_dir) / "reference",
            model_fingerprint(reference_path, cfg.model.get("revision")),
            tokenizer_fingerprint(tokenizer),
            str(policy.dtype),
            shared_prompt=shared_prompt,
            joint=joint,
        )
    main_process = is_main_process()  # issue 5: only rank 0 writes metrics.jsonl and W&B
    report_to = init_wandb(cfg, run_dir) if main_process else []
    out_dir = run_dir / "checkpoints" if stage == "train" else run_dir / "checkpoints" / stage
    args = dpo_config(cfg, out_dir, steps or cfg.train.steps, device, report_to)
    if sequential:  # curricula order the data themselves; a random sampler would undo it
        args.train_sampling_strategy = "sequential"
    elif "kl_logratios" in objective.spec.inputs:
        # KTO's z₀ from the batch's own completions (the paper's estimate, TRL's only order): shuffle once by
        # the seed, then read in order, so each batch is one chunk of with_mismatched_completion's pairing.
        dataset = dataset.shuffle(seed=cfg.seed).flatten_indices()
        args.train_sampling_strategy = "sequential"
    # BCO's UDM: density-ratio weights of undesirable examples from the reference (= the untrained policy).
    # Rank 0 computes them and broadcasts them (a collective every rank joins), so outside rank0_first.
    batch = args.precompute_ref_batch_size
    dataset, udm = with_udm_weights(
        dataset, policy, tokenizer, cfg.objective, objective, device=args.device, seed=cfg.seed, batch_size=batch
    )
    with rank0_first():  # issue 5: rank 0 computes + caches the reference log-probs, the other ranks load them
        trainer = ListTrainer(
            model=policy,
            objective=objective,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            ref_cache=ref_cache,
            shared_prompt=shared_prompt,
            peft_config=lora_config(cfg.model),
            callbacks=[MetricsFileCallback(MetricsFile(run_dir / "metrics.jsonl"), stage, main_process)],
        )
    entanglement = cfg.diagnostics.gradient_entanglement
    if entanglement.every:
        from prefrun.diagnostics.entanglement import GradientEntanglementCallback

        trainer.add_callback(
            GradientEntanglementCallback(trainer, entanglement.every, entanglement.probe_size, entanglement.params)
        )
    # --- issue 5: checkpoint on SIGTERM/SIGUSR1, resume from the last complete checkpoint ------------------
    preemption = preemption_callback()
    trainer.add_callback(preemption)
    resume_from = resume_checkpoint(cfg, args.output_dir)
    trainer.train(resume_from_checkpoint=resume_from)
    preemption.exit_if_preempted()
    # --------------------------------------------------------------------------------------------------------
    stats = {
        "examples": len(dataset),
        "world_size": trainer.accelerator.num_processes,  # processes that trained together
        "shared_prompt": shared_prompt,
        "policy_forwards": trainer.policy_forwards,
        "reference_forwards": trainer.reference_forwards,
        "reference_cache": None if ref_cache is None else {"hits": ref_cache.hits, "misses": ref_cache.misses},
        "train_runtime_s": trainer.state.log_history[-1].get("train_runtime") if trainer.state.log_history else None,
        "num_tokens": trainer._total_train_tokens,
    }
    if udm is not None:
        stats["udm"] = udm
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval(), tokenizer, stats
