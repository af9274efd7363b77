"""The reward-model task: data → cached SFT backbone → reward-model training → saved RM → held-out evaluation.

    prefrun task=reward_model objective=bt                      # Bradley–Terry on the sort task's pairs
    prefrun task=reward_model objective=pl_rm                   # Plackett–Luce on its K = 8 lists
    prefrun task=reward_model objective=bt dataset=hh_rlhf dataset.path=hh.jsonl
    prefrun task=reward_model objective=pal_b dataset=sort_plural     # PAL: one mixture per user
    prefrun task=reward_model objective=pal_b dataset=sort_plural reward_model.from=<PAL run dir> \
        reward_model.adapt_user=n00 reward_model.adapt_pairs=10       # a new user from 10 comparisons

The objective must train a reward model (registered with ``trains="reward_model"``). Lists reach ``bt`` as
pairs by ``dataset.pairs`` and ``pl_rm`` whole; unpaired feedback (KTO-style labels) holds no comparison and
is refused. The model is saved in ``<run dir>/model`` as a one-output sequence-classification checkpoint,
so ``reward=reward_model reward.path=<run dir>`` scores with it in any evaluator (and the online trainer).
Evaluation (``reward_model.eval``): held-out pair accuracy, calibration (ECE) and, on lists of K > 2,
Spearman's ρ with the oracle (synthetic tasks) or the lists' labels (``prefrun.evaluation.reward_model``);
on data with users, the accuracy of each user and its mean over seen and unseen users.

PAL (``objective=pal_a|pal_b``, whose registration asks for a user-conditioned head) trains a head on the
frozen SFT backbone's embeddings (``prefrun.trainers.pal``); every training record must name its user
(``dataset.fields.user``). Its model dir holds the head, its user table and the backbone's path and width
(``prefrun.models.pal``); the evaluation adds the purity of the learned mixtures against the true groups
(records with a ``group``). New users: ``reward_model.from=<PAL run dir>`` loads that run's head (on this
run's backbone, which must be as wide), ``reward_model.adapt_user`` names the new users (an id, a list, or
``new``: every user of the data the model has not seen), and only their mixture logits train, on their first
``adapt_pairs`` comparisons (the dataset's adaptation pool, or their training records), for
``adapt_steps`` steps at ``adapt_lr``; they are evaluated on their held-out comparisons.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from prefrun.errors import PrefrunError
from prefrun.objectives.config import build_objective
from prefrun.objectives.pal import is_user_conditioned
from prefrun.tasks import TASKS
from prefrun.tasks.base import RunContext
from prefrun.tasks.reward_model_pal import adapt_settings, check_users
from prefrun.tasks.steps import sft_reference

log = logging.getLogger("prefrun")


def training_records(cfg: DictConfig, objective: Any, data: Any) -> list[dict]:
    """The records the reward model trains on: pairs (``bt``, by dataset.pairs) or whole lists (``pl_rm``)."""
    from prefrun.data.shaping import shape_for_objective

    name = cfg.dataset.name
    if not data.train:
        raise PrefrunError(f"dataset {name} is empty; check dataset.path and dataset.splits")
    if any("labels" in r for r in data.train):
        raise PrefrunError(
            f"dataset {name} holds unpaired feedback (prompt, completion, label), which compares nothing; a reward "
            "model trains on pairs or ranked lists: use a pairwise or list dataset (dataset=hh_rlhf, sort, ...)"
        )
    records = shape_for_objective(data.train, objective, cfg.dataset)
    if not records:
        raise PrefrunError(
            f"dataset {name} yields no training example for objective {objective.name} (all lists tied?)"
        )
    return records


def rm_eval_settings(cfg: DictConfig) -> dict[str, Any]:
    settings = (cfg.get("reward_model") or {}).get("eval") or {}
    return {
        "records": settings.get("records"),
        "batch_size": int(settings.get("batch_size", 64)),
        "bins": int(settings.get("bins", 10)),
    }


@TASKS.register("reward_model")
class RewardModelTask:
    name = "reward_model"
    stage_labels = {"build_s": "build", "sft_s": "SFT", "train_s": "training", "save_s": "save", "eval_s": "eval"}

    def check(self, cfg: DictConfig) -> None:
        from prefrun.tasks.settings_check import check_settings
        from prefrun.trainers.settings import TrainSettings

        check_settings(cfg)  # every numeric setting's range and type, before data, SFT or ranks
        objective = build_objective(cfg.objective, trains="reward_model")
        TrainSettings.from_config(cfg)
        adapt_settings(cfg, objective)  # reward_model.from / adapt_user: a PAL objective and a PAL run
        if cfg.curriculum.name != "none":
            raise PrefrunError(
                f"curriculum={cfg.curriculum.name} orders policy training; task=reward_model trains on the data as "
                "it is: drop curriculum (curriculum=none)"
            )
        if cfg.model.get("peft") not in (None, "none", False):
            raise PrefrunError(
                f"model.peft={cfg.model.peft}: task=reward_model trains the full model (a LoRA reward head is not "
                "supported yet); drop model.peft"
            )

    def prepare(self, cfg: DictConfig) -> None:
        """Data, the base model and the cached SFT backbone, so N ranks find them instead of building them."""
        from prefrun.data.sources import build_data
        from prefrun.models.loading import base_model_path, saved_policy_dir

        objective = build_objective(cfg.objective, trains="reward_model")
        data = build_data(cfg.dataset, cfg.seed)
        records = training_records(cfg, objective, data)
        if is_user_conditioned(objective) and adapt_settings(cfg, objective) is None:
            check_users(records, cfg.dataset.name)  # before the SFT, not after it
        if is_user_conditioned(objective):
            from prefrun.tasks.reward_model_pal import backbone_setting

            if backbone_setting(cfg) == "minilm":
                return  # the sentence encoder reads the text: no SFT backbone to build
        base = base_model_path(cfg.model, data.words, Path(cfg.paths.cache_dir) / "models")
        sft_reference(cfg, data, base, from_saved_policy=saved_policy_dir(cfg.model.get("path") or ".") is not None)

    def run(self, cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
        from prefrun.data.sources import build_data
        from prefrun.models.loading import base_model_path, saved_policy_dir
        from prefrun.trainers.reward import train_reward_model
        from prefrun.trainers.settings import TrainSettings

        objective = build_objective(cfg.objective, trains="reward_model")
        settings = TrainSettings.from_config(cfg)
        if is_user_conditioned(objective):
            from prefrun.tasks.reward_model_pal import run_pal

            return run_pal(cfg, ctx, objective, settings, training_records, rm_eval_settings(cfg))
        with ctx.stage("build_s"):
            data = build_data(cfg.dataset, cfg.seed, eval_split=cfg.eval.get("split", "test"))
            records = training_records(cfg, objective, data)
            held_out = data.eval_records  # a dataset without held-out lists fails now, not after training
            base = base_model_path(cfg.model, data.words, Path(cfg.paths.cache_dir) / "models")
        with ctx.stage("sft_s"):
            saved = saved_policy_dir(cfg.model.get("path") or ".") is not None
            run_dir = ctx.run_dir if ctx.main_process else None
            backbone = sft_reference(cfg, data, base, from_saved_policy=saved, run_dir=run_dir)
        with ctx.stage("train_s"):
            model, tokenizer, stats = train_reward_model(
                settings, objective, records, backbone, ctx.run_dir, ctx.device
            )
        saved_model = None
        if cfg.run.save_model and ctx.main_process:
            from prefrun.models.saving import directory_size, save_policy

            with ctx.stage("save_s"):
                path = save_policy(model, tokenizer, ctx.run_dir)
                saved_model = {"path": str(path), "bytes": directory_size(path)}
        with ctx.stage("eval_s"):
            metrics = evaluate_reward_model(cfg, model, tokenizer, data, held_out, ctx.device)
            per_user = metrics.pop("user_accuracy", None)  # a table, kept out of the flat eval figures
        from prefrun.evaluation.reward_model import summary_rows

        return {
            "objective": objective.name,
            "hparams": dict(objective.hparams),
            "train": {"lr": cfg.train.lr, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size},
            "backbone_path": backbone,
            "model_dir": saved_model,
            "reward_source": f"reward=reward_model reward.path={ctx.run_dir}" if saved_model else None,
            "eval": {f"reward_model/{k}": v for k, v in metrics.items()},
            "eval_rows": [[label, "", value] for label, value in summary_rows(metrics)],
            "training": stats,
            **({"users": {u: {"accuracy": a} for u, a in per_user.items()}} if per_user else {}),
        }

    @staticmethod
    def summary(results: dict[str, Any]) -> str:
        """The printed summary: the held-out figures, the wall time by stage, where the model is and how to use it."""
        lines = [
            f"prefrun: {results['objective']} reward model on {results['dataset']} with {results['model']} "
            f"(seed {results['seed']})"
        ]
        for label, _, value in results.get("eval_rows") or []:
            lines.append(f"{label:34}{value:>10}")
        timings, labels = results["timings"], results.get("stage_labels", {})
        stages = ", ".join(f"{labels[k]} {v:.1f}s" for k, v in timings.items() if k in labels)
        lines.append(f"wall time {timings['wall_s']:.1f}s ({stages})")
        lines.append(f"run directory: {results['run_dir']}")
        if results.get("reward_source"):
            lines.append(f"use it: {results['reward_source']}")
        return "\n".join(lines)


def evaluate_reward_model(
    cfg: DictConfig, model: Any, tokenizer: Any, data: Any, held_out: list[dict], device: str
) -> dict[str, Any]:
    """The trained model's held-out figures (``prefrun.evaluation.reward_model``) on ``held_out`` lists."""
    from prefrun.evaluation.reward_model import reward_model_metrics
    from prefrun.trainers.reward import score_lists, tokenized_lists

    settings = rm_eval_settings(cfg)
    records = held_out[: int(settings["records"])] if settings["records"] else held_out
    if not records:
        raise PrefrunError(f"dataset {cfg.dataset.name} holds out no lists to evaluate the reward model on")
    rows = [dict(r) for r in tokenized_lists(records, tokenizer, cfg.train.max_prompt_len, cfg.train.max_response_len)]
    rewards = score_lists(
        model.to(device).eval(), rows, pad_token_id=tokenizer.pad_token_id, batch_size=settings["batch_size"]
    )
    truth, truth_name = None, "labels"
    if data.reward_fn is not None:  # a synthetic task: rank correlation with its oracle
        truth = [[data.reward_fn(r["prompt"], y) for y in r["responses"]] for r in records]
        truth_name = "oracle"
    pairs = str(cfg.dataset.get("pairs", "best_worst"))
    metrics = reward_model_metrics(
        rewards, records, pairs=pairs, truth=truth, truth_name=truth_name, bins=settings["bins"]
    )
    if any(r.get("user") is not None for r in records):  # pluralistic data: one reward for every user
        from prefrun.evaluation.reward_model import per_user_metrics

        seen = {str(r["user"]) for r in data.train if r.get("user") is not None}
        metrics.update(per_user_metrics(rewards, records, {"seen": seen}, pairs=pairs))
    return metrics
