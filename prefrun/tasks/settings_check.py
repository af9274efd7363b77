"""The valid ranges of the run config's numeric settings, checked before data, SFT or ranks start.

A bad number otherwise surfaces late and far from its cause: ``train.steps=-5`` becomes TRL's "train for
epochs" (600 steps), ``train.lr=abc`` a TypeError inside the optimizer, ``eval.oracle.prompts=0`` a
StatisticsError after training has finished. ``check_settings(cfg)`` turns each into one line naming the
key, the value and what it takes (one line each; wrapped here)::

    train.steps=-5 is out of range: it must be an integer ≥ 1 (optimizer steps of preference training);
        e.g. train.steps=200
    train.lr='abc' is not a finite number: it must be a number ≥ 0 (learning rate; 0 = a control run);
        e.g. train.lr=1e-5

Only keys the composed config holds are checked (groups differ in what they define); ``eval.*.<key>``
applies to every selected evaluator. The objective's own hyperparameters are its ``validate``'s business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.errors import PrefrunError


@dataclass(frozen=True)
class Rule:
    """A numeric setting: its type, its bounds (``low_open``: the bound itself is excluded), whether null is
    allowed, what it means and an example value for the message."""

    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    meaning: str = ""
    example: str = ""

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            what += f" in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            what += f" {'>' if self.low_open else '≥'} {_num(self.low)}"
        elif self.high is not None:
            what += f" {'<' if self.high_open else '≤'} {_num(self.high)}"
        if self.nullable:
            what += " or null"
        return what + (f" ({self.meaning})" if self.meaning else "")

    def in_range(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def count(low: int = 1, meaning: str = "", example: str = "", nullable: bool = False) -> Rule:
    return Rule(int, low=low, meaning=meaning, example=example, nullable=nullable)


def positive(meaning: str = "", example: str = "", nullable: bool = False) -> Rule:
    return Rule(float, low=0, low_open=True, meaning=meaning, example=example, nullable=nullable)


def fraction(high_open: bool = False, meaning: str = "", example: str = "") -> Rule:
    return Rule(float, low=0, high=1, high_open=high_open, meaning=meaning, example=example)


SEED = count(0, "a random seed", "0")
OPTIONAL_SEED = count(0, "a random seed; null = the run's seed", "0", nullable=True)

RULES: dict[str, Rule] = {
    "seed": count(0, "the run's random seed", "0"),
    # preference training
    "train.steps": count(1, "optimizer steps of preference training", "200"),
    "train.batch_size": count(1, "prompts per optimizer step, over all ranks", "32"),
    "train.lr": Rule(float, low=0, meaning="learning rate; 0 = a control run", example="1e-5"),
    "train.warmup_steps": count(0, "learning-rate warm-up steps", "0"),
    "train.max_prompt_len": count(1, "tokens per prompt", "128"),
    "train.max_response_len": count(1, "tokens per response", "128"),
    "train.logging_steps": count(1, "steps between logged metrics", "10"),
    "run.checkpoint_steps": count(0, "steps between checkpoints; 0 = none", "100"),
    # the SFT reference
    "sft.steps": count(1, "SFT optimizer steps", "1000"),
    "sft.batch_size": count(1, "SFT examples per step", "64"),
    "sft.lr": Rule(float, low=0, meaning="SFT learning rate", example="2e-3"),
    "sft.warmup_steps": count(0, "SFT warm-up steps", "50"),
    "curriculum.stages": count(1, "curriculum stages; > 1 = iterative", "3"),
    # sampling
    "generation.temperature": Rule(float, low=0, meaning="0 = greedy", example="1.0"),
    "generation.top_p": Rule(float, low=0, high=1, low_open=True, meaning="1.0 = off", example="0.9"),
    "generation.top_k": count(0, "0 = off", "50"),
    "generation.max_new_tokens": count(1, "tokens per sample", "128"),
    "generation.batch_size": count(1, "prompts per generate call", "64"),
    # evaluators (eval.<name>.<key>, for every selected evaluator that has the key)
    "eval.*.prompts": count(1, "held-out prompts to sample", "256"),
    "eval.*.max_new_tokens": count(1, "tokens per sample", "24"),
    "eval.*.batch_size": count(1, "prompts or rows per forward", "64"),
    "eval.*.samples": count(1, "samples per prompt and model", "1"),
    "eval.*.bootstrap": count(1, "bootstrap resamples", "2000"),
    "eval.*.records": count(1, "held-out records; null = all", "500", nullable=True),
    "eval.*.seed": SEED,
    # data
    "dataset.k": count(1, "responses per prompt; null = all", "4", nullable=True),
    "dataset.min_k": count(1, "fewest responses a prompt keeps", "2"),
    "dataset.max_rows": count(1, "records kept; null = all", "1000", nullable=True),
    "dataset.holdout": fraction(True, "the fraction of train held out", "0.05"),
    "dataset.joint_pairs": count(0, "joint pairs across prompts; 0 = none", "0"),
    "dataset.unpaired_threshold": Rule(float, nullable=True, meaning="label = score ≥ this", example="0.5"),
    "dataset.train_prompts": count(1, "synthetic training prompts", "6400"),
    "dataset.eval_prompts": count(1, "synthetic held-out prompts", "256"),
    "dataset.min_len": count(1, "fewest numbers per prompt", "5"),
    "dataset.max_len": count(1, "most numbers per prompt", "8"),
    "dataset.vocab": count(1, "numbers below this", "30"),
    "dataset.max_swaps": count(0, "adjacent swaps per candidate", "6"),
    "dataset.corrupt_prob": fraction(meaning="chance a candidate is malformed", example="0.2"),
    "dataset.sft_records": count(1, "SFT records", "16000"),
    "dataset.sft_max_swaps": count(0, "swaps per SFT record", "3"),
    # the model
    "model.hidden_size": count(1, "tiny model width", "128"),
    "model.intermediate_size": count(1, "tiny model MLP width", "512"),
    "model.num_layers": count(1, "tiny model layers", "2"),
    "model.num_heads": count(1, "tiny model attention heads", "4"),
    "model.max_position_embeddings": count(1, "tiny model context length", "256"),
    "model.init_seed": SEED,
    "model.lora.r": count(1, "LoRA rank", "16"),
    "model.lora.alpha": positive("LoRA scale α", "32"),
    "model.lora.dropout": fraction(True, "LoRA dropout", "0.05"),
    # hardware
    "hardware.num_processes": count(1, "ranks per node", "2"),
    "hardware.num_nodes": count(1, "nodes", "1"),
    "hardware.per_device_batch_size": count(1, "examples per device; null = the rank's share", "8", nullable=True),
    "hardware.threads": count(1, "CPU threads per process; null = its share", "4", nullable=True),
    "hardware.ddp_timeout_s": count(1, "seconds collectives may wait", "7200"),
    "hardware.shutdown_timeout_s": count(0, "seconds ranks get to checkpoint after SIGTERM", "120"),
    # diagnostics
    "diagnostics.gradient_entanglement.every": count(0, "steps between measurements; 0 = off", "50"),
    "diagnostics.gradient_entanglement.probe_size": count(1, "probe pairs", "8"),
    # reward sources
    "reward.annotators": count(1, "simulated annotators", "5"),
    "reward.flip_prob": fraction(meaning="chance an annotator flips a vote", example="0.2"),
    "reward.score_noise": Rule(float, low=0, meaning="σ of the score noise", example="0.1"),
    "reward.temperature": Rule(float, low=0, meaning="0 = greedy", example="0.0"),
    "reward.max_new_tokens": count(1, "judge tokens per verdict", "1024"),
    "reward.max_prompt_len": count(1, "judge prompt tokens", "2048"),
    "reward.batch_size": count(1, "sequences per forward", "16"),
    "reward.max_length": count(1, "tokens; null = the model's context", "2048", nullable=True),
    "reward.seed": OPTIONAL_SEED,
    # task=reward_model's held-out evaluation
    "reward_model.eval.records": count(1, "held-out lists; null = all", "500", nullable=True),
    "reward_model.eval.batch_size": count(1, "lists per forward", "64"),
    "reward_model.eval.bins": count(1, "calibration-error bins", "10"),
    # task=reward_model: PAL and new users
    "reward_model.adapt_pairs": count(1, "comparisons of each new user", "10"),
    "reward_model.adapt_steps": count(1, "optimizer steps of the new users' adaptation", "100"),
    "reward_model.adapt_lr": positive("the new users' learning rate", "0.05"),
    "dataset.groups": count(1, "sort_plural's user groups", "2"),
    "dataset.users": count(1, "sort_plural's seen users", "20"),
    "dataset.new_users": count(0, "sort_plural's held-out new users", "4"),
    "dataset.pairs_per_user": count(1, "training comparisons per user", "64"),
    "dataset.eval_pairs_per_user": count(1, "held-out comparisons per user", "32"),
    # task=online
    "online.k": count(1, "samples per prompt and round", "4"),
    "online.update_every": count(1, "optimizer steps per round; 1 = fully online", "1"),
    "online.temperature": Rule(float, low=0, low_open=True, meaning="sampling temperature", example="1.0"),
    "online.max_new_tokens": count(1, "tokens per sample", "24"),
    "online.iterations": count(1, "iterations, each sampling once from the last; null = off", "3", nullable=True),
    # task=diffusion
    "diffusion.scheduler.num_train_timesteps": count(2, "DDPM training timesteps T", "1000"),
    "diffusion.eval.samples": count(1, "samples of policy and of reference", "256"),
    "diffusion.eval.ddim_steps": count(1, "DDIM steps per sample", "25"),
    "diffusion.eval.batch_size": count(1, "images per UNet forward", "256"),
    "diffusion.eval.implicit_timesteps": count(1, "(t, ε) draws per held-out pair", "4"),
    "diffusion.eval.seed": SEED,
    "dataset.image_size": count(4, "image side in pixels", "16"),
    "dataset.train_pairs": count(1, "synthetic training pairs", "2048"),
    "dataset.eval_pairs": count(1, "synthetic held-out pairs", "256"),
    "dataset.pretrain_images": count(1, "images the reference UNet pretrains on", "8192"),
    "dataset.min_gap": Rule(float, low=0, meaning="near-tie threshold on the oracle reward", example="0.05"),
    "dataset.noise": Rule(float, low=0, meaning="background noise σ", example="0.05"),
    "dataset.channels": count(1, "image channels: 1 or 3", "3"),
    "dataset.resolution": count(4, "resize + crop side; null = keep", "512", nullable=True),
    "model.sample_size": count(4, "UNet image side", "16"),
    "model.in_channels": count(1, "UNet image channels", "1"),
    "model.layers_per_block": count(1, "ResNet layers per UNet block", "1"),
    "model.norm_num_groups": count(1, "GroupNorm groups (divides every block width)", "8"),
    # data steps
}


def _as_number(value: Any, rule: Rule) -> float | int | None:
    """``value`` as the rule's type, or None when it is not one (bools are not numbers, 2.5 is no integer)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    if rule.kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def check_value(key: str, value: Any, rule: Rule) -> None:
    """Raise a one-line PrefrunError unless ``value`` is valid for ``rule``."""
    if value is None:
        if rule.nullable:
            return
        raise PrefrunError(f"{key} is null: it must be {rule.describe()}; e.g. {key}={rule.example}")
    number = _as_number(value, rule)
    if number is None:
        shown = repr(value) if isinstance(value, str) else str(value)
        noun = "an integer" if rule.kind is int else "a finite number"
        raise PrefrunError(f"{key}={shown} is not {noun}: it must be {rule.describe()}; e.g. {key}={rule.example}")
    if not rule.in_range(number):
        raise PrefrunError(f"{key}={value} is out of range: it must be {rule.describe()}; e.g. {key}={rule.example}")


def _present(cfg: DictConfig, pattern: str) -> list[tuple[str, Any]]:
    """(key, value) for every key of ``cfg`` matching ``pattern`` (``*`` = any one key holding a mapping)."""
    head, _, rest = pattern.partition(".*.")
    if not rest:
        node = cfg
        *parents, leaf = pattern.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, DictConfig) else None
        if not isinstance(node, DictConfig) or leaf not in node:
            return []
        return [(pattern, node[leaf])]
    parent = OmegaConf.select(cfg, head)
    if not isinstance(parent, DictConfig):
        return []
    found = []
    for name, sub in parent.items():
        if isinstance(sub, DictConfig) and rest in sub:
            found.append((f"{head}.{name}.{rest}", sub[rest]))
    return found


def _check_relations(cfg: DictConfig) -> None:
    """Settings valid one by one but not together."""
    dataset = cfg.get("dataset") or {}
    if dataset.get("synthetic") and "min_len" in dataset and "max_len" in dataset:
        if dataset.min_len > dataset.max_len:
            raise PrefrunError(
                f"dataset.min_len={dataset.min_len} is above dataset.max_len={dataset.max_len}; make min_len ≤ max_len"
            )
        if "vocab" in dataset and dataset.vocab < dataset.max_len:
            raise PrefrunError(
                f"dataset.vocab={dataset.vocab} is below dataset.max_len={dataset.max_len}: a prompt holds that many "
                "distinct numbers below vocab; raise dataset.vocab or lower dataset.max_len"
            )
    k, min_k = dataset.get("k"), dataset.get("min_k")
    if k is not None and min_k is not None and min_k > k:
        raise PrefrunError(f"dataset.min_k={min_k} is above dataset.k={k}: every prompt would be dropped; lower min_k")
    model = cfg.get("model") or {}
    if model.get("builtin") and "hidden_size" in model and "num_heads" in model and model.hidden_size % model.num_heads:
        raise PrefrunError(
            f"model.hidden_size={model.hidden_size} does not divide over model.num_heads={model.num_heads}; "
            "use a multiple of num_heads"
        )


def check_settings(cfg: DictConfig, rules: dict[str, Rule] | None = None) -> None:
    """Check every numeric setting of ``cfg`` that ``rules`` (default: RULES) knows; the first bad one raises."""
    for pattern, rule in (RULES if rules is None else rules).items():
        for key, value in _present(cfg, pattern):
            check_value(key, value, rule)
    _check_relations(cfg)
