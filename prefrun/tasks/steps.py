"""Steps several tasks share: the SFT reference, the models of a run, and running the chosen evaluators."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from prefrun.data.records import records_fingerprint
from prefrun.errors import PrefrunError

log = logging.getLogger("prefrun")


def select_training_data(cfg: DictConfig, data: Any, device: str, run_dir: Path | None = None) -> dict[str, Any]:
    """Apply ``data/select`` to ``data.train`` (in place; cached by content, rank 0 first) and return its report,
    also written to ``run_dir/data_steps.json`` when given."""
    from prefrun.runtime.distributed import rank0_first
    from prefrun.selection.steps import apply_selection

    step_cfg = cfg.get("data", {}).get("select")
    with rank0_first():  # rank 0 selects and caches; the other ranks read the cache
        data.train, report = apply_selection(
            data.train, step_cfg, cfg.paths.cache_dir, reward_fn=data.reward_fn, words=data.words, device=device
        )
    if run_dir is not None:
        from prefrun.results.files import write_json

        write_json(run_dir / "data_steps.json", [report])
    return report


def sft_reference(
    cfg: DictConfig, data: Any, base: str, *, from_saved_policy: bool = False, run_dir: Path | None = None
) -> str:
    """The reference model's path: the cached SFT of ``base`` on the task's SFT data, or ``base`` itself.

    ``sft.enabled=auto`` fine-tunes when the dataset provides SFT data, unless the model is a saved prefrun
    policy (``model.path=<run dir>``): that one continues from where its run stopped.
    """
    from prefrun.trainers.sft_stage import run_sft

    enabled = cfg.sft.enabled
    if enabled == "auto":
        enabled = data.sft is not None and not from_saved_policy
    if not enabled:
        return base
    if data.sft is None:
        raise PrefrunError(f"sft.enabled=true but dataset {cfg.dataset.name} provides no SFT data")
    sft_cfg = {k: cfg.sft[k] for k in ("steps", "batch_size", "lr", "warmup_steps")}
    sft_cfg.update(seed=0, max_prompt_len=cfg.train.max_prompt_len, max_response_len=cfg.train.max_response_len)
    fingerprint = records_fingerprint(data.sft)
    return str(run_sft(base, data.sft, sft_cfg, Path(cfg.paths.cache_dir) / "sft", fingerprint, run_dir=run_dir))


def device_of(cfg: DictConfig) -> str:
    import torch

    return "cuda" if cfg.hardware.accelerator == "cuda" and torch.cuda.is_available() else "cpu"


def selected_evaluators(eval_cfg: DictConfig) -> list[str]:
    """The evaluators ``eval=[...]`` composed, in order (each sits under its own key of ``eval``)."""
    return [name for name, value in eval_cfg.items() if isinstance(value, DictConfig)]


def evaluate_policy(
    cfg: DictConfig,
    *,
    policy: Any,
    tokenizer: Any,
    reference_path: str,
    data: Any,
    objective: Any,
    device: str,
    eval_cfg: DictConfig | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[Any]]]:
    """Run every selected evaluator on ``policy``; returns ({evaluator: metrics}, {evaluator: summary rows}).

    ``oracle`` on a dataset without an oracle gives way to ``preference`` (held-out pairs), which every
    loaded dataset supports.
    """
    from prefrun.evaluation import EVALUATORS
    from prefrun.evaluation.base import EvalInputs
    from prefrun.generation import settings_from_config
    from prefrun.models.loading import load_model
    from prefrun.rewards import RewardContext, build_reward

    eval_cfg = cfg.eval if eval_cfg is None else eval_cfg
    names = selected_evaluators(eval_cfg)
    if "oracle" in names and data.reward_fn is None:
        names = [n for n in names if n != "oracle"]
        try:
            data.eval_records  # noqa: B018 - does the dataset hold out any preference?
        except PrefrunError as e:
            log.warning("dataset %s has no oracle and no held-out preferences: no evaluation (%s)", cfg.dataset.name, e)
        else:
            log.warning("dataset %s has no oracle: evaluating its held-out pairs (eval=preference)", cfg.dataset.name)
            if "preference" not in names:
                names.insert(0, "preference")
    evaluators = {name: EVALUATORS.get(name) for name in names}  # an unknown name fails before any work
    cache: dict[str, Any] = {}

    def reference() -> Any:
        if "reference" not in cache:
            cache["reference"] = load_model(reference_path, cfg.model, device).to(device).eval()
        return cache["reference"]

    def reward() -> Any:
        if "reward" not in cache:
            context = RewardContext(
                oracle=data.reward_fn,
                device=device,
                cache_dir=str(cfg.paths.cache_dir),
                words=data.words,
                seed=cfg.seed,
            )
            cache["reward"] = build_reward(cfg.reward, context)
        return cache["reward"]

    inputs = EvalInputs(
        policy=policy,
        tokenizer=tokenizer,
        reference=reference,
        data=data,
        objective=objective,
        reward=reward,
        generation=settings_from_config(cfg.generation),
        device=device,
        seed=cfg.seed,
        max_prompt_len=cfg.train.max_prompt_len,
        max_response_len=cfg.train.max_response_len,
    )
    metrics: dict[str, dict[str, Any]] = {}
    rows: dict[str, list[Any]] = {}
    for name, evaluate in evaluators.items():
        settings = eval_cfg.get(name) if name in eval_cfg else DictConfig({})
        result = evaluate(inputs, settings)
        metrics[name], rows[name] = result.metrics, result.rows
    return metrics, rows


def save_trained(policy: Any, tokenizer: Any, ctx: Any) -> dict[str, Any] | None:
    """The trained policy into ``model/`` (rank 0; the LoRA adapter alone under PEFT); its size for results."""
    if not ctx.main_process:
        return None
    from prefrun.models.saving import directory_size, save_policy

    path = save_policy(policy, tokenizer, ctx.run_dir)
    return {"path": str(path), "bytes": directory_size(path), "adapter": hasattr(policy, "peft_config")}


def save_and_evaluate(
    cfg: DictConfig, ctx: Any, policy: Any, tokenizer: Any, *, reference_path: str, data: Any, objective: Any
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], dict[str, list[Any]]]:
    """What every policy-training task does after training: save the policy (``run.save_model``), merge a LoRA
    adapter, run the selected evaluators. Returns (saved model, {evaluator: metrics}, {evaluator: rows})."""
    from prefrun.trainers.preference import merged

    saved_model = None
    if cfg.run.save_model:
        with ctx.stage("save_s"):
            saved_model = save_trained(policy, tokenizer, ctx)
    policy = merged(policy).to(ctx.device).eval()
    with ctx.stage("eval_s"):
        per_evaluator, rows = evaluate_policy(
            cfg,
            policy=policy,
            tokenizer=tokenizer,
            reference_path=reference_path,
            data=data,
            objective=objective,
            device=ctx.device,
        )
    return saved_model, per_evaluator, rows


def flat_metrics(per_evaluator: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One flat dict for results.json's ``eval``: the oracle's keys as they are, others under ``<evaluator>/``."""
    flat: dict[str, Any] = {}
    for name, metrics in per_evaluator.items():
        for key, value in metrics.items():
            flat[key if name == "oracle" or key.startswith(f"{name}/") else f"{name}/{key}"] = value
    return flat
