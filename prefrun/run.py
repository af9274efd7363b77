"""One run: check inputs, build data and models, SFT reference, preference training, evaluation, results.

Everything a run writes lands in its run directory (see prefrun.results.layout), atomically; user
errors surface as a PrefrunError before anything is written as if finished.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.errors import PrefrunError
from prefrun.launch import is_main_process, reset_run_dir
from prefrun.objectives import Objective, get_objective, get_spec
from prefrun.results.files import environment, write_atomic, write_json

# Keys of conf/objective/*.yaml that configure the run around the loss, not hyperparameters of the function.
OBJECTIVE_META = {"name", "data", "needs_reference", "udm", "baselines"}
log = logging.getLogger("prefrun")


def build_objective(objective_cfg: Any) -> Objective:
    """The objective named by ``objective.name`` with every other key as a hyperparameter."""
    hparams = {k: v for k, v in OmegaConf.to_container(objective_cfg, resolve=True).items() if k not in OBJECTIVE_META}
    objective = get_objective(objective_cfg.name, **hparams)
    spec = get_spec(objective_cfg.name)
    for key in ("data", "needs_reference"):
        if key in objective_cfg and objective_cfg[key] != getattr(spec, key):
            raise PrefrunError(
                f"objective.{key}={objective_cfg[key]} contradicts the registered {spec.name!r} "
                f"({getattr(spec, key)}); remove the override"
            )
    return objective


def shape_for_objective(records: list[dict], objective: Objective, dataset_cfg: Any) -> list[dict]:
    """Turn lists into what the objective trains on: pairs, unpaired feedback, or lists of ≥ min_k."""
    from prefrun.data.pairs import to_pairs, to_unpaired

    spec = objective.spec
    for field in ("baseline_logps",):  # per-response data an objective cannot train without
        if field in spec.inputs and any(field not in r for r in records):
            raise PrefrunError(
                f"objective {spec.name} needs a {field} field in dataset {dataset_cfg.name}; "
                f"map it with dataset.fields.{field}=<column> or compute it with "
                "objective.baselines=[<model preset or path>, ...]"
            )
    has_labels = "labels" in records[0]
    joint_wanted = int(dataset_cfg.get("joint_pairs") or 0)
    if spec.data != "unpaired" and not spec.joint and (joint_wanted or any("prompts" in r for r in records)):
        raise PrefrunError(
            f"dataset {dataset_cfg.name} holds joint preferences (responses to different prompts); objective "
            f"{spec.name} compares responses to one prompt: use objective=jpo, or drop dataset.joint_pairs"
        )
    dropped = 0
    if spec.data == "unpaired":
        if not has_labels:
            mode = dataset_cfg.get("unpaired", "top_bottom")
            kwargs = {"threshold": dataset_cfg.get("unpaired_threshold")} if mode == "threshold" else {}
            records, dropped = to_unpaired(records, mode, **kwargs)
    elif has_labels:
        raise PrefrunError(
            f"dataset {dataset_cfg.name} holds unpaired feedback (prompt, completion, label); "
            f"objective {spec.name} needs {spec.data} data: use objective=kto or objective=bco"
        )
    elif spec.data == "pairwise":
        shortest = min(len(r["responses"]) for r in records)
        if shortest < 2:
            raise PrefrunError(
                f"objective {spec.name} needs pairs but dataset {dataset_cfg.name} has lists of "
                f"{shortest} response(s); use a pairwise or list dataset"
            )
        # Always through to_pairs: it orders each pair chosen-first and drops ties, also when K = 2.
        conditional, dropped = to_pairs(records, dataset_cfg.get("pairs", "best_worst"))
        if joint_wanted:  # DOVE trains on conditional and joint pairs combined
            from prefrun.data.pairs import joint_pairs

            conditional += joint_pairs(records, joint_wanted, seed=0)
        records = conditional
        augment = dataset_cfg.get("augment")
        if augment not in (None, "none") and any("prompts" in r for r in records):
            raise PrefrunError(f"dataset.augment={augment} rewrites one prompt per pair; joint pairs have two")
        if augment == "reward_conditioned":
            from prefrun.data.augment import reward_conditioned

            records = reward_conditioned(records, system_role=dataset_cfg.get("system_role", True))
        elif augment not in (None, "none"):
            raise PrefrunError(f"dataset.augment={augment!r} is unknown; use reward_conditioned or none")
    else:
        short = [i for i, r in enumerate(records) if len(r["responses"]) < spec.min_k]
        if short:
            raise PrefrunError(
                f"objective {spec.name} needs lists of at least {spec.min_k} responses; dataset "
                f"{dataset_cfg.name} row {short[0]} has {len(records[short[0]]['responses'])}; "
                "drop short lists with dataset.min_k"
            )
    advice = spec.advise(records, objective.hparams) if spec.advise and records else None
    if advice:
        log.warning(advice)
    if dropped:
        log.warning(
            "%d prompt(s) of dataset %s yield no %s example (tied scores) and are skipped",
            dropped,
            dataset_cfg.name,
            spec.data,
        )
    return records


def add_baselines(cfg: DictConfig, objective: Objective, data: Any, device: str) -> dict[str, int] | None:
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
    from prefrun.data.baseline_scores import score_records
    from prefrun.launch import rank0_first

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


def records_fingerprint(records: list[dict]) -> str:
    """A content hash of records: what the SFT cache key needs, and nothing unrelated to them."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def check_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to rerun into a finished run unless asked; a partial one is resumed or restarted."""
    if (run_dir / "results.json").exists() and not cfg.run.overwrite:
        raise PrefrunError(
            f"{run_dir} already holds a finished run; pass run.overwrite=true to replace it "
            "or choose another seed/override"
        )


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Execute one run into ``run_dir`` (``overrides``: what the user changed) and return its results."""
    started = time.time()
    timings: dict[str, float] = {}
    objective = build_objective(cfg.objective)  # validates before anything heavy happens
    check_run_dir(run_dir, cfg)
    main_process = is_main_process()  # issue 5: only rank 0 of a multi-process run writes the run directory
    if main_process:
        # A finished run with run.overwrite starts clean; a partial one resumes from its last complete
        # checkpoint (run.resume; metrics.jsonl cut back to it) or starts clean (prefrun.launch.reset_run_dir).
        reset_run_dir(run_dir, cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_atomic(run_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides or []))))
        write_json(run_dir / "env.json", environment())

    from prefrun.data.sources import build_data

    t = time.time()
    data = build_data(cfg.dataset, cfg.seed, eval_split=cfg.eval.get("split", "test"))
    if not data.train:
        raise PrefrunError(f"dataset {cfg.dataset.name} is empty; check dataset.path and dataset.splits")

    import torch

    device = "cuda" if cfg.hardware.accelerator == "cuda" and torch.cuda.is_available() else "cpu"
    cache_dir = Path(cfg.paths.cache_dir)
    baseline_started = time.time()
    baseline_cache = add_baselines(cfg, objective, data, device)
    if baseline_cache is not None:
        timings["baselines_s"] = time.time() - baseline_started  # part of build_s
    curriculum = cfg.curriculum.name != "none"
    train_records = data.train if curriculum else shape_for_objective(data.train, objective, cfg.dataset)
    if not train_records:
        raise PrefrunError(
            f"dataset {cfg.dataset.name} yields no training example for objective {objective.name} (all lists tied?)"
        )

    from prefrun.models.loading import base_model_path
    from prefrun.trainers.preference import train_preference
    from prefrun.trainers.sft_stage import run_sft

    base = base_model_path(cfg.model, data.words, cache_dir / "models")
    timings["build_s"] = time.time() - t

    t = time.time()
    reference_path = base
    sft_enabled = cfg.sft.enabled
    if sft_enabled == "auto":
        sft_enabled = data.sft is not None
    if sft_enabled:
        if data.sft is None:
            raise PrefrunError(f"sft.enabled=true but dataset {cfg.dataset.name} provides no SFT data")
        sft_cfg = {k: cfg.sft[k] for k in ("steps", "batch_size", "lr", "warmup_steps")}
        sft_cfg.update(seed=0, max_prompt_len=cfg.train.max_prompt_len, max_response_len=cfg.train.max_response_len)
        fingerprint = records_fingerprint(data.sft)
        reference_path = str(run_sft(base, data.sft, sft_cfg, cache_dir / "sft", fingerprint))
    timings["sft_s"] = time.time() - t

    t = time.time()
    if curriculum:
        from prefrun.trainers.stages import train_curriculum

        policy, tokenizer, train_stats = train_curriculum(
            cfg, objective, train_records, reference_path, run_dir, device
        )
    else:
        policy, tokenizer, train_stats = train_preference(
            cfg, objective, train_records, reference_path, run_dir, device
        )
    if baseline_cache is not None:
        train_stats = {**train_stats, "baseline_cache": baseline_cache}
    timings["train_s"] = time.time() - t

    t = time.time()
    evaluation: dict[str, Any] = {}
    if cfg.eval.name == "oracle" and data.reward_fn is not None:
        from prefrun.evaluation.oracle import evaluate
        from prefrun.models.loading import load_model

        reference = load_model(reference_path, cfg.model, device).eval()  # only the oracle reads it
        evaluation = evaluate(
            policy,
            reference,
            tokenizer,
            data.eval_prompts[: cfg.eval.prompts],
            data.reward_fn,
            data.strict_fns,
            cfg.eval.max_new_tokens,
            cfg.eval.batch_size,
            cfg.eval.seed,
        )
    elif cfg.eval.name == "oracle":
        evaluation = {"note": f"dataset {cfg.dataset.name} has no oracle; only training metrics are reported"}
    timings["eval_s"] = time.time() - t
    finish_wandb(cfg, evaluation)
    timings["wall_s"] = time.time() - started

    results = {
        "experiment": cfg.experiment_name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "objective": objective.name if not curriculum else f"{objective.name}+{cfg.curriculum.name}",
        "hparams": {k: v for k, v in objective.hparams.items()},
        "train": {"lr": cfg.train.lr, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size},
        "seed": cfg.seed,
        "eval": evaluation,
        "training_summary": training_summary(run_dir / "metrics.jsonl"),
        "training": train_stats,
        "timings": timings,
        "variant": run_dir.parent.name,  # the override part of the run directory
        "run_dir": str(run_dir),
    }
    if main_process:
        write_json(run_dir / "results.json", results)  # last: its presence marks the run finished
    return results


def summary_table(results: dict[str, Any]) -> str:
    """The short table `prefrun` prints: reference vs policy on the oracle, KL, win rate, wall time."""
    ev = results["eval"]
    tm = results["timings"]
    lines = [
        f"prefrun: {results['objective']} on {results['dataset']} with {results['model']} (seed {results['seed']})"
    ]
    if "policy/oracle_reward" in ev:
        lines.append(f"{'':22}{'reference (SFT)':>16}{'policy':>10}")
        rows = [
            ("oracle reward", "oracle_reward", ".3f"),
            ("exact sort rate", "exact_sort", ".3f"),
            ("valid permutation", "valid_permutation", ".3f"),
            ("response length", "length", ".2f"),
        ]
        for label, key, fmt in rows:
            lines.append(f"{label:22}{ev['reference/' + key]:>16{fmt}}{ev['policy/' + key]:>10{fmt}}")
        lines.append(f"{'win rate vs reference':22}{'':>16}{ev['win_rate']:>10.3f}")
        lines.append(f"{'KL(policy || ref)':22}{'':>16}{ev['kl']:>10.3f}")
    elif ev.get("note"):
        lines.append(ev["note"])
    lines.append(
        "wall time {wall_s:.1f}s (build {build_s:.1f}s, SFT {sft_s:.1f}s, training {train_s:.1f}s, "
        "eval {eval_s:.1f}s)".format(**tm)
    )
    lines.append(f"run directory: {results['run_dir']}")
    return "\n".join(lines)


def training_summary(metrics_path: Path) -> dict[str, float]:
    """From metrics.jsonl: the change of the chosen/rejected log-probs over training, mean entanglement ratio."""
    from prefrun.results.metrics_log import MetricsFile

    rows = [r for r in MetricsFile(metrics_path).rows() if r.get("kind") == "step"]
    summary: dict[str, float] = {}
    for key in ("logps/chosen", "logps/rejected"):
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if len(values) >= 2:
            summary[f"{key}_change"] = values[-1] - values[0]
    ratios = [r["entanglement/ratio"] for r in rows if isinstance(r.get("entanglement/ratio"), int | float)]
    if ratios:
        summary["entanglement/ratio_mean"] = sum(ratios) / len(ratios)
    return summary


def finish_wandb(cfg: DictConfig, evaluation: dict[str, Any]) -> None:
    """Put the final evaluation into the W&B run's summary and close it (the same numbers as results.json)."""
    if cfg.logger.name != "wandb":
        return
    import wandb

    if wandb.run is not None:
        wandb.run.summary.update({f"eval/{k}": v for k, v in evaluation.items() if isinstance(v, int | float)})
        wandb.finish()


def wandb_mode(requested: str) -> str:
    """auto = online when the user is logged in (an API key is configured), offline otherwise."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text():
        return "online"
    return "offline"
