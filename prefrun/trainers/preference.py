"""Preference training of one stage: tokenized records → ListTrainer → trained policy.

Takes typed ``TrainSettings`` (``prefrun.trainers.settings``), builds the reference log-prob cache and the
metrics.jsonl logging, checkpoints on preemption, and returns the trained policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefrun.data.records import Record, prompts_of
from prefrun.data.tokenize import tokenize_record
from prefrun.objectives import Objective
from prefrun.results.metrics_log import MetricsFile, MetricsFileCallback
from prefrun.results.progress import attach_progress
from prefrun.runtime.checkpoints import last_complete_checkpoint, train_resumable
from prefrun.runtime.distributed import is_main_process, rank0_first
from prefrun.trainers.settings import TrainSettings, dpo_config

EXTRA_FIELDS = ("labels", "p_chosen", "baseline_logps")


def tokenized_dataset(
    records: list[Record], tokenizer: Any, max_prompt_len: int, max_response_len: int, joint: bool = False
) -> Any:
    """A datasets.Dataset of prompt_ids, response_ids[K], scores[K] (+ labels, p_chosen when present).

    ``joint``: prompts start with BOS, as their tokens will be scored (see tokenize_record).
    """
    from datasets import Dataset

    if any("prompts" in r for r in records):  # one column layout for all rows: per-response prompts everywhere
        records = [{**r, "prompts": prompts_of(r)} for r in records]
    rows = []
    for record in records:
        row = tokenize_record(record, tokenizer, max_prompt_len, max_response_len, joint)
        row["scores"] = record["scores"]
        for name in EXTRA_FIELDS:
            if name in record:
                row[name] = record[name]
        rows.append(row)
    return Dataset.from_list(rows)


def train_preference(
    settings: TrainSettings,
    objective: Objective,
    records: list[Record],
    reference_path: str,
    run_dir: Path,
    device: str,
    *,
    sequential: bool = False,
    stage: str = "train",
) -> tuple[Any, Any, dict[str, Any]]:
    """Train ``objective`` from the model at ``reference_path``, which is also the reference.

    Returns (trainer model, tokenizer, stats): the model is a PeftModel under ``model.peft=lora`` (its adapter
    is what gets saved), the full model otherwise. ``sequential`` keeps the records' order (curricula);
    ``stage`` tags metrics.jsonl lines and names the checkpoint folder of a later stage.
    """
    import torch

    from prefrun.data.shared_prompt import use_shared_prompt
    from prefrun.models.loading import load_model_and_tokenizer, lora_config
    from prefrun.trainers.density_ratio import with_udm_weights
    from prefrun.trainers.list_trainer import ListTrainer, NonFiniteTraining
    from prefrun.trainers.ref_cache import ReferenceCache, model_fingerprint, tokenizer_fingerprint

    s = settings
    torch.manual_seed(s.seed)
    policy, tokenizer = load_model_and_tokenizer(reference_path, s.model, device)
    joint = objective.spec.joint
    dataset = tokenized_dataset(records, tokenizer, s.max_prompt_len, s.max_response_len, joint=joint)
    shared_prompt = use_shared_prompt(s.shared_prompt, dataset, objective.spec)
    ref_cache = None
    if s.cache_reference and objective.needs_reference:
        # The packing is part of the key: shared and unshared log-probs differ in the last float bits.
        ref_cache = ReferenceCache(
            Path(s.cache_dir) / "reference",
            model_fingerprint(reference_path, s.model.get("revision")),
            tokenizer_fingerprint(tokenizer),
            str(policy.dtype),
            shared_prompt=shared_prompt,
            joint=joint,
        )
    main_process = is_main_process()  # only rank 0 writes metrics.jsonl and W&B
    out_dir = run_dir / "checkpoints" if stage == "train" else run_dir / "checkpoints" / stage
    args = dpo_config(s, out_dir, device)
    if sequential:  # curricula order the data themselves; a random sampler would undo it
        args.train_sampling_strategy = "sequential"
    elif "kl_logratios" in objective.spec.inputs:
        # KTO's z₀ from the batch's own completions (the paper's estimate, TRL's only order): shuffle once by
        # the seed, then read in order, so each batch is one chunk of with_mismatched_completion's pairing.
        dataset = dataset.shuffle(seed=s.seed).flatten_indices()
        args.train_sampling_strategy = "sequential"
    # BCO's UDM: density-ratio weights of undesirable examples from the reference (= the untrained policy).
    # Rank 0 computes them and broadcasts them (a collective every rank joins), so outside rank0_first.
    batch = args.precompute_ref_batch_size
    dataset, udm = with_udm_weights(
        dataset, policy, tokenizer, s.objective_cfg, objective, device=args.device, seed=s.seed, batch_size=batch
    )
    with rank0_first():  # rank 0 computes + caches the reference log-probs, the other ranks load them
        trainer = ListTrainer(
            model=policy,
            objective=objective,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            ref_cache=ref_cache,
            shared_prompt=shared_prompt,
            peft_config=lora_config(s.model),
            callbacks=[MetricsFileCallback(MetricsFile(run_dir / "metrics.jsonl"), stage, main_process)],
        )
    attach_progress(trainer, stage)  # step/total, rate, ETA, loss and margin instead of raw log dicts
    entanglement = s.entanglement
    if entanglement is not None and entanglement.every:
        from prefrun.diagnostics.entanglement import GradientEntanglementCallback

        trainer.add_callback(
            GradientEntanglementCallback(trainer, entanglement.every, entanglement.probe_size, entanglement.params)
        )
    # Checkpoint on SIGTERM/SIGUSR1; resume from the last complete checkpoint.
    resume_from = last_complete_checkpoint(args.output_dir) if s.resume else None
    try:
        train_resumable(trainer, resume_from)
    except NonFiniteTraining as e:
        if stage == "train":
            raise
        raise NonFiniteTraining(f"{stage}: {e}") from None  # which curriculum stage diverged
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
    return trainer.accelerator.unwrap_model(trainer.model).eval(), tokenizer, stats


def merged(model: Any) -> Any:
    """A PEFT model with its adapter merged into the weights (for evaluation); any other model as it is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
