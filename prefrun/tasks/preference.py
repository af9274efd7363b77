"""The preference task (the default): data → SFT reference → preference training → saved policy → evaluation.

prefrun objective=lipo dataset=ultrafeedback model=qwen2_5_0_5b
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from prefrun.errors import PrefrunError
from prefrun.objectives.config import build_objective
from prefrun.tasks import TASKS
from prefrun.tasks.base import RunContext
from prefrun.tasks.steps import (
    flat_metrics,
    save_and_evaluate,
    select_training_data,
    selected_evaluators,
    sft_reference,
)

log = logging.getLogger("prefrun")


def _training_records(cfg: DictConfig, objective: Any, data: Any) -> tuple[list[dict], dict[str, int]]:
    """The records the objective trains on (a curriculum shapes its own pairs from the lists) and what shaping
    dropped (counts, for the data report)."""
    from prefrun.data.shaping import clean_lists, shaped

    if not data.train:
        raise PrefrunError(f"dataset {cfg.dataset.name} is empty; check dataset.path and dataset.splits")
    if cfg.curriculum.name != "none":
        records, identical = clean_lists(data.train, cfg.dataset)
        dropped = {"identical": identical}
    else:
        records, dropped = shaped(data.train, objective, cfg.dataset)
    if not records:
        raise PrefrunError(
            f"dataset {cfg.dataset.name} yields no training example for objective {objective.name} "
            "(all lists tied, or chosen = rejected?)"
        )
    return records, dropped


def _data_report(cfg: DictConfig, records: list[dict], dropped: dict[str, int], data: Any, base: str) -> dict:
    """The data report (prefrun.data.report) of the training records, tokenized by the model's tokenizer."""
    from prefrun.data.report import data_report, implicit_whitespace_prompt
    from prefrun.models.loading import load_tokenizer
    from prefrun.runtime.distributed import world_size

    score_range = cfg.objective.get("score_range")
    return data_report(
        records,
        dropped,
        len(data.train),
        load_tokenizer(base, cfg.model),
        max_prompt_len=int(cfg.train.max_prompt_len),
        max_response_len=int(cfg.train.max_response_len),
        batch_size=int(cfg.train.batch_size),
        ranks=world_size(cfg),
        steps=int(cfg.train.steps),
        score_range=list(score_range) if score_range is not None else None,
        implicit_prompt=implicit_whitespace_prompt(cfg.dataset),
    )


def add_baselines(cfg: DictConfig, objective: Any, data: Any, device: str) -> dict[str, int] | None:
    """PoFT's baseline_logps computed by the models of ``objective.baselines`` (cached); None when none are listed.

    The field comes from the data (dataset.fields.baseline_logps) or from baselines, never both: given
    both, the run stops rather than silently preferring one.
    """
    baselines = cfg.objective.get("baselines")
    if not baselines:
        return None
    if "baseline_logps" not in objective.spec.inputs:
        raise PrefrunError(f"objective {objective.name} takes no baseline_logps; remove objective.baselines")
    if any("baseline_logps" in r for r in data.train):
        raise PrefrunError(
            f"dataset {cfg.dataset.name} already gives baseline_logps (dataset.fields.baseline_logps) and "
            "objective.baselines lists models to compute them; keep one of the two"
        )
    from prefrun.runtime.distributed import rank0_first
    from prefrun.trainers.baseline_scores import score_records

    with rank0_first():  # rank 0 scores and caches, the other ranks (if already started) load the cache
        stats = score_records(
            data.train,
            baselines,
            words=data.words,
            cache_dir=cfg.paths.cache_dir,
            device=device,
            max_prompt_len=cfg.train.max_prompt_len,
            max_response_len=cfg.train.max_response_len,
        )
    log.info("baseline_logps from %d model(s): %d cached, %d computed", stats["models"], stats["hits"], stats["misses"])
    return stats


@TASKS.register("preference")
class PreferenceTask:
    name = "preference"
    stage_labels = {"build_s": "build", "sft_s": "SFT", "train_s": "training", "save_s": "save", "eval_s": "eval"}

    def check(self, cfg: DictConfig) -> None:
        from prefrun.models.loading import check_model_available
        from prefrun.tasks.settings_check import check_settings
        from prefrun.trainers.settings import TrainSettings

        check_settings(cfg)  # every numeric setting's range and type, before data, SFT or ranks
        objective = build_objective(cfg.objective)
        if "old_logps" in objective.spec.inputs:  # the sampling policy's log-probs exist only for fresh samples
            raise PrefrunError(f"objective={objective.name} samples from the policy: run it with task=online")
        TrainSettings.from_config(cfg)
        check_model_available(cfg.model)  # a hub model neither cached nor reachable fails now, in seconds

    def prepare(self, cfg: DictConfig) -> None:
        """Data, the base model and the cached SFT reference, so N ranks find them instead of building them."""
        from prefrun.data.sources import build_data
        from prefrun.models.loading import base_model_path, saved_policy_dir

        objective = build_objective(cfg.objective)
        data = build_data(cfg.dataset, cfg.seed)
        select_training_data(cfg, data, "cpu")  # the selection's cache, warm before ranks start
        _training_records(cfg, objective, data)  # its errors, before N processes start
        base = base_model_path(cfg.model, data.words, Path(cfg.paths.cache_dir) / "models")
        sft_reference(cfg, data, base, from_saved_policy=saved_policy_dir(cfg.model.get("path") or ".") is not None)

    def run(self, cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
        from prefrun.data.sources import build_data
        from prefrun.models.loading import base_model_path, saved_policy_dir
        from prefrun.results.metrics_log import training_summary
        from prefrun.trainers.settings import TrainSettings

        objective = build_objective(cfg.objective)
        settings = TrainSettings.from_config(cfg)
        curriculum = cfg.curriculum.name != "none"
        with ctx.stage("build_s"):
            data = build_data(cfg.dataset, cfg.seed, eval_split=cfg.eval.get("split", "test"))
            data_steps = [select_training_data(cfg, data, ctx.device, ctx.run_dir if ctx.main_process else None)]
            baseline_cache = add_baselines(cfg, objective, data, ctx.device)
            records, dropped = _training_records(cfg, objective, data)
            if {"preference", "reward", "judge"} & set(selected_evaluators(cfg.eval)):
                data.eval_records  # noqa: B018 - a missing eval split fails now, not after training
            base = base_model_path(cfg.model, data.words, Path(cfg.paths.cache_dir) / "models")
            data_report = _data_report(cfg, records, dropped, data, base)
            if ctx.main_process:
                from prefrun.data.report import log_report

                log_report(data_report, cfg.dataset.name, objective.name, log)
        with ctx.stage("sft_s"):
            saved = saved_policy_dir(cfg.model.get("path") or ".") is not None
            run_dir = ctx.run_dir if ctx.main_process else None  # SFT lines into metrics.jsonl, from rank 0
            reference_path = sft_reference(cfg, data, base, from_saved_policy=saved, run_dir=run_dir)
        with ctx.stage("train_s"):
            if curriculum:
                from prefrun.trainers.stages import train_curriculum

                policy, tokenizer, stats = train_curriculum(
                    settings, cfg.curriculum, objective, records, reference_path, ctx.run_dir, ctx.device
                )
            else:
                from prefrun.trainers.preference import train_preference

                policy, tokenizer, stats = train_preference(
                    settings, objective, records, reference_path, ctx.run_dir, ctx.device
                )
        if baseline_cache is not None:
            stats = {**stats, "baseline_cache": baseline_cache}
        saved_model, per_evaluator, rows = save_and_evaluate(
            cfg, ctx, policy, tokenizer, reference_path=reference_path, data=data, objective=objective
        )
        return {
            "objective": objective.name if not curriculum else f"{objective.name}+{cfg.curriculum.name}",
            "hparams": dict(objective.hparams),
            "train": {"lr": cfg.train.lr, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size},
            "reference_path": reference_path,
            "reference_label": "reference (SFT)" if reference_path != base else "reference",
            "model_dir": saved_model,
            "eval": flat_metrics(per_evaluator),
            "eval_rows": [[r.label, r.reference, r.policy] for evaluator_rows in rows.values() for r in evaluator_rows],
            "training": stats,
            "training_summary": training_summary(ctx.run_dir / "metrics.jsonl"),
            "data": data_report,
            "data_steps": data_steps,
        }
