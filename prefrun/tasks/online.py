"""The online task: cached SFT reference → rounds of sampling, scoring and training → saved policy → evaluation.

    prefrun task=online                                  # online DPO with the oracle on sort, K = 4 (the default)
    prefrun task=online objective=ipo                    # any pairwise objective: best/worst of K (online.pairs)
    prefrun task=online objective=lipo online.k=8        # list objectives train on the whole list of K samples
    prefrun task=online online.update_every=4 reward=noisy_oracle
    prefrun experiment=iterative_dpo                     # 3 iterations: sample once, train, the iterate is the
                                                         # next reference (online.iterations=3)

Each round (``online.update_every`` steps) samples ``online.k`` responses for each of its prompts from the
current policy, scores them with ``reward``, shapes them by ``online.pairs`` (ties dropped and counted) and
trains ``objective`` on them (``prefrun.online``). Records carry ``old_logps`` (the sampling policy's summed
log-probs), so objectives that take them (RLOO, GRPO, P3O) train on the same loop. The trained policy is saved
in ``<run dir>/model`` and evaluated against the SFT reference by ``eval`` (the oracle on sort); the samples
of every round are in ``<run dir>/online/`` and their figures per round in metrics.jsonl and
``plots/online.png``.
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
from prefrun.tasks.steps import flat_metrics, save_and_evaluate, sft_reference

log = logging.getLogger("prefrun")


def online_settings(cfg: DictConfig, objective: Any) -> tuple[Any, str]:
    """The ``online`` block and the record shape, with the objective's needs checked (one-line errors)."""
    from prefrun.online.rounds import OnlineSettings
    from prefrun.online.shaping import resolve_shape

    settings = OnlineSettings.from_config(cfg.online)
    spec = objective.spec
    if spec.data == "unpaired":
        raise PrefrunError(
            f"objective {spec.name} trains on unpaired feedback; task=online shapes its samples into pairs or "
            "lists: use a pairwise objective (dpo, ipo) or a list objective (lipo, pro)"
        )
    if spec.joint:
        raise PrefrunError(f"objective {spec.name} compares responses to different prompts; task=online has one")
    unsupported = set(spec.inputs) - {"old_logps", "p_chosen"}  # p_chosen: the reward source's P(w ≻ l)
    if unsupported:
        raise PrefrunError(
            f"objective {spec.name} takes {', '.join(sorted(unsupported))}, which task=online does not supply; "
            "use an objective of pairs or lists"
        )
    shape = resolve_shape(str(settings.pairs), spec.data)
    if "p_chosen" in spec.inputs and shape == "list":
        raise PrefrunError(f"objective {spec.name} takes p_chosen of pairs; online.pairs=list gives lists")
    smallest = 2 if shape != "list" else spec.min_k
    if settings.k < smallest:
        what = "a pair" if shape != "list" else f"lists of at least {spec.min_k}"
        raise PrefrunError(
            f"online.k={settings.k}: objective {spec.name} trains on {what} (online.pairs={shape}), which needs "
            f"online.k ≥ {smallest} samples per prompt; e.g. online.k=4"
        )
    if settings.iterations is not None and int(cfg.train.steps) % settings.iterations:
        raise PrefrunError(
            f"online.iterations={settings.iterations} does not divide train.steps={cfg.train.steps}: each "
            "iteration trains the same number of steps; use a multiple"
        )
    return settings, shape


@TASKS.register("online")
class OnlineTask:
    name = "online"
    stage_labels = {
        "build_s": "build",
        "sft_s": "SFT",
        "train_s": "online training",
        "save_s": "save",
        "eval_s": "eval",
    }

    def check(self, cfg: DictConfig) -> None:
        from prefrun.runtime.distributed import world_size
        from prefrun.tasks.settings_check import check_settings
        from prefrun.trainers.settings import TrainSettings

        check_settings(cfg)
        objective = build_objective(cfg.objective)
        online_settings(cfg, objective)
        TrainSettings.from_config(cfg)
        if world_size(cfg) > 1:
            raise PrefrunError("task=online runs in one process for now: use hardware=cpu or hardware=gpu (one device)")
        if cfg.curriculum.name != "none":
            raise PrefrunError(f"curriculum={cfg.curriculum.name} orders a fixed dataset; task=online samples its own")

    def prepare(self, cfg: DictConfig) -> None:
        """The data and the cached SFT reference, built once before the run."""
        from prefrun.data.sources import build_data
        from prefrun.models.loading import base_model_path, saved_policy_dir

        data = build_data(cfg.dataset, cfg.seed)
        base = base_model_path(cfg.model, data.words, Path(cfg.paths.cache_dir) / "models")
        sft_reference(cfg, data, base, from_saved_policy=saved_policy_dir(cfg.model.get("path") or ".") is not None)

    def run(self, cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
        from prefrun.data.sources import build_data
        from prefrun.generation import settings_from_config
        from prefrun.models.loading import base_model_path, saved_policy_dir
        from prefrun.online.figure import plot_rounds, round_rows
        from prefrun.online.rounds import ROUND_DIR, Rounds
        from prefrun.online.trainer import train_online
        from prefrun.results.metrics_log import training_summary
        from prefrun.rewards import RewardContext, build_reward
        from prefrun.trainers.settings import TrainSettings

        objective = build_objective(cfg.objective)
        online, shape = online_settings(cfg, objective)
        settings = TrainSettings.from_config(cfg)
        with ctx.stage("build_s"):
            data = build_data(cfg.dataset, cfg.seed, eval_split=cfg.eval.get("split", "test"))
            prompts = [r["prompt"] for r in data.train]
            base = base_model_path(cfg.model, data.words, Path(cfg.paths.cache_dir) / "models")
            context = RewardContext(
                oracle=data.reward_fn,
                device=ctx.device,
                cache_dir=str(cfg.paths.cache_dir),
                words=data.words,
                seed=cfg.seed,
            )
            reward = build_reward(cfg.reward, context)
        with ctx.stage("sft_s"):
            saved = saved_policy_dir(cfg.model.get("path") or ".") is not None
            run_dir = ctx.run_dir if ctx.main_process else None
            reference_path = sft_reference(cfg, data, base, from_saved_policy=saved, run_dir=run_dir)

        def rounds(tokenizer: Any, metrics: Any) -> Rounds:
            return Rounds(
                prompts=prompts,
                tokenizer=tokenizer,
                settings=online,
                sampling=settings_from_config(cfg.generation),
                reward=reward,
                shape=shape,
                min_k=objective.spec.min_k,
                with_reference=objective.needs_reference,
                prompts_per_step=settings.batch_size,
                steps_per_round=settings.steps // online.iterations if online.iterations else online.update_every,
                refresh_reference=online.iterations is not None,
                preferences="p_chosen" in objective.spec.inputs,  # iREPO: the annotators' vote shares
                directory=ctx.run_dir / ROUND_DIR,
                metrics=metrics,
                seed=settings.seed,
                max_prompt_len=settings.max_prompt_len,
            )

        with ctx.stage("train_s"):
            policy, tokenizer, stats = train_online(
                settings, objective, rounds, reference_path, ctx.run_dir, ctx.device
            )
        saved_model, per_evaluator, rows = save_and_evaluate(
            cfg, ctx, policy, tokenizer, reference_path=reference_path, data=data, objective=objective
        )
        per_round = round_rows(ctx.run_dir / "metrics.jsonl")
        figure = plot_rounds(per_round, ctx.run_dir / "plots" / "online.png") if ctx.main_process else None
        return {
            "objective": objective.name,
            "hparams": dict(objective.hparams),
            "train": {"lr": cfg.train.lr, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size},
            "online": {
                **online_summary(per_round),
                "k": online.k,
                "update_every": online.update_every,
                "iterations": online.iterations,
                "pairs": shape,
                "temperature": online.temperature,
                "max_new_tokens": online.max_new_tokens,
                "reward": reward.name,
                "reward_stats": reward.stats(),
                "figure": str(figure) if figure else None,
            },
            "reference_path": reference_path,
            "reference_label": "reference (SFT)" if reference_path != base else "reference",
            "model_dir": saved_model,
            "eval": flat_metrics(per_evaluator),
            "eval_rows": [[r.label, r.reference, r.policy] for evaluator_rows in rows.values() for r in evaluator_rows],
            "training": stats,
            "training_summary": training_summary(ctx.run_dir / "metrics.jsonl"),
        }

    @staticmethod
    def summary(results: dict[str, Any]) -> str:
        """The evaluators' table, the rounds in one line, the wall time by stage and the run directory."""
        from prefrun.evaluation.base import Row, header, render_rows

        lines = [
            f"prefrun: online {results['objective']} on {results['dataset']} with {results['model']} "
            f"(seed {results['seed']})"
        ]
        rows = [Row(*row) for row in results.get("eval_rows") or []]
        if rows:
            lines += [header(results.get("reference_label", "reference")), *render_rows(rows)]
        o = results["online"]
        lines.append(
            f"online: {o['rounds']} rounds of K={o['k']} ({o['samples']:,} samples, reward={o['reward']}), sample "
            f"reward {o['reward_first']:.3f} → {o['reward_last']:.3f}, ties {o['tie_rate']:.1%}, truncated "
            f"{o['truncation_rate']:.1%}, {o['skipped_steps']} steps skipped, {o['unscored']} unscored"
        )
        timings, labels = results["timings"], results.get("stage_labels", {})
        stages = ", ".join(f"{labels[k]} {v:.1f}s" for k, v in timings.items() if k in labels)
        lines.append(
            f"wall time {timings['wall_s']:.1f}s ({stages}; sampling {o['sampling_s']:.1f}s, scoring "
            f"{o['scoring_s']:.1f}s, log-probs {o['logps_s']:.1f}s)"
        )
        lines.append(f"run directory: {results['run_dir']}")
        return "\n".join(lines)


def online_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the rounds' metrics.jsonl lines: samples, ties, truncation, skipped steps, time by part."""
    import math
    from statistics import fmean

    def total(key: str) -> float:
        return float(sum(r.get(key, 0.0) for r in rounds))

    prompts = total("online/prompts")
    rewards = [r["online/reward_mean"] for r in rounds if isinstance(r.get("online/reward_mean"), float)]
    rewards = [x for x in rewards if not math.isnan(x)]
    tie_rates = [r["online/tie_rate"] for r in rounds if not math.isnan(r.get("online/tie_rate", math.nan))]
    samples = int(sum(r["online/samples"] for r in rounds))
    return {
        "rounds": len(rounds),
        "prompts": int(prompts),
        "samples": samples,
        "records": int(total("online/records")),
        "reward_first": rewards[0] if rewards else math.nan,
        "reward_last": rewards[-1] if rewards else math.nan,
        "reward_mean": fmean(rewards) if rewards else math.nan,
        "tie_rate": fmean(tie_rates) if tie_rates else math.nan,
        "truncation_rate": fmean(r["online/truncation_rate"] for r in rounds) if rounds else math.nan,
        "kl_last": rounds[-1]["online/kl"] if rounds else math.nan,
        "skipped_steps": int(total("online/skipped_steps")),
        "unscored": int(total("online/unscored")),
        "score_errors": int(total("online/score_errors")),
        "sampling_s": total("online/sampling_s"),
        "scoring_s": total("online/scoring_s"),
        "logps_s": total("online/logps_s"),
    }
