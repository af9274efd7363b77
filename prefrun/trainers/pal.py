"""PAL training (``objective=pal_a|pal_b``): the frozen backbone's embeddings once, then the head by a Trainer.

The backbone is frozen (the reference code's "PAL-B-Tiny", ``main_pal_b_fix_llm.py``), so each prompt and
response is embedded once (``prefrun.models.pal.embed``) and the head (projectors, prototypes, user table W)
trains on those features: a transformers ``Trainer`` subclass, because TRL's RewardTrainer wants a
one-output sequence classifier and nothing in TRL is user-conditioned. What every prefrun trainer does is
kept: checkpoints under ``run_dir/checkpoints``, resume from the last complete one, preemption,
metrics.jsonl, the progress line.

Optimiser groups as the reference's: the projectors, prototypes and logit scale at ``objective.lr``, the
user table W at ``objective.user_lr``. A new user (``adapt_users``) gets K_p mixture logits, initialised at 0
(the uniform mixture; the reference draws them from N(0, 1)), and only those train: the head is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from prefrun.data.records import Record
from prefrun.errors import PrefrunError
from prefrun.objectives import Objective


@dataclass
class Features:
    """Embedded records: h(x) [N, H], h(x, y_k) [N, K, H], mask [N, K], scores [N, K] and each record's user."""

    prompt: torch.Tensor
    items: torch.Tensor
    mask: torch.Tensor
    scores: torch.Tensor
    users: list[str | None]


def record_features(
    records: list[Record],
    encoder: Any,
    tokenizer: Any,
    max_prompt_len: int,
    max_response_len: int,
    batch_size: int = 64,
) -> Features:
    """The records tokenized as the reward models read them (prefrun.data.tokenize) and embedded by ``encoder``."""
    from prefrun.models.pal import embed
    from prefrun.trainers.reward import tokenized_lists

    rows = list(tokenized_lists(records, tokenizer, max_prompt_len, max_response_len))
    prompt, items, mask = embed(encoder, rows, tokenizer.pad_token_id, batch_size)
    scores = torch.zeros(mask.shape)
    for i, r in enumerate(records):
        scores[i, : len(r["scores"])] = torch.tensor(r["scores"], dtype=torch.float32)
    return Features(prompt, items, mask, scores, [r.get("user") for r in records])


class FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, features: Features, user_index: torch.Tensor) -> None:
        self.f, self.user_index = features, user_index

    def __len__(self) -> int:
        return len(self.user_index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        f = self.f
        return {"prompt": f.prompt[i], "items": f.items[i], "mask": f.mask[i], "scores": f.scores[i],
                "user_index": self.user_index[i]}  # fmt: skip


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}


class NewUsers(nn.Module):
    """A frozen PAL head and the mixture logits [n, K_p] of n new users: the only parameters that train."""

    def __init__(self, head: nn.Module, n: int) -> None:
        super().__init__()
        self.head = head.requires_grad_(False)
        self.logits = nn.Parameter(torch.zeros(n, head.shape.prototypes))

    def forward(self, prompt: torch.Tensor, items: torch.Tensor, user_index: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(prompt, items, user_index, weights=torch.softmax(self.logits[user_index], dim=-1))


class PALTrainer(Trainer):
    """Train a user-conditioned reward-model objective on embedded records; ``param_groups`` as torch's."""

    def __init__(
        self, model: nn.Module, objective: Objective, args: Any, train_dataset: Any, param_groups: list[dict], **kw: Any
    ) -> None:
        self.objective, self.param_groups = objective, param_groups
        self._metrics: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=collate, **kw)
        self.can_return_loss, self.label_names = True, []

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.param_groups)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001 - Trainer's
        out = model(inputs["prompt"], inputs["items"], inputs["user_index"])
        extra = {name: out[name] for name in self.objective.spec.inputs}
        result = self.objective.reward_loss(out["rewards"], inputs["scores"], mask=inputs["mask"], **extra)
        mode = "train" if model.training else "eval"
        for name, value in result.metrics.items():
            self._metrics[mode].setdefault(name, []).append(value)
        return (result.loss, out) if return_outputs else result.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The step's metrics averaged over its micro-batches, as TRL's RewardTrainer logs them."""
        mode = "train" if self.model.training else "eval"
        logs.update({k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v})
        super().log(logs, start_time)
        self._metrics[mode] = {}


def _fit(
    settings: Any,
    objective: Objective,
    model: nn.Module,
    dataset: FeatureDataset,
    param_groups: list[dict],
    run_dir: Path,
    device: str,
    stage: str,
) -> dict[str, Any]:
    """One Trainer run with prefrun's callbacks (metrics.jsonl, progress, preemption, resume)."""
    from prefrun.results.metrics_log import MetricsFile, MetricsFileCallback
    from prefrun.results.progress import attach_progress
    from prefrun.runtime.checkpoints import last_complete_checkpoint, train_resumable
    from prefrun.runtime.distributed import is_main_process
    from prefrun.trainers.reward import reward_config

    args = reward_config(settings, run_dir / "checkpoints", device, learning_rate=param_groups[0]["lr"])
    trainer = PALTrainer(
        model=model,
        objective=objective,
        args=args,
        train_dataset=dataset,
        param_groups=param_groups,
        callbacks=[MetricsFileCallback(MetricsFile(run_dir / "metrics.jsonl"), stage, is_main_process())],
    )
    attach_progress(trainer, stage)
    resume_from = last_complete_checkpoint(args.output_dir) if settings.resume else None
    train_resumable(trainer, resume_from)
    log = trainer.state.log_history
    return {
        "examples": len(dataset),
        "steps": trainer.state.global_step,
        "train_runtime_s": log[-1].get("train_runtime") if log else None,
        "world_size": trainer.accelerator.num_processes,
    }


def train_pal(
    settings: Any, objective: Objective, features: Features, hidden_size: int, run_dir: Path, device: str
) -> tuple[Any, dict[str, Any]]:
    """A new PAL head (``objective``'s shape over the backbone's ``hidden_size``) trained on ``features``;
    (head, stats). Every record must name its user."""
    from prefrun.models.pal import PALConfig, PALHead

    users = sorted({u for u in features.users if u is not None})
    torch.manual_seed(settings.seed)
    head = PALHead(PALConfig.from_hparams(objective.hparams, hidden_size), users)
    dataset = FeatureDataset(features, head.user_indices(features.users))
    hp = objective.hparams
    rest = [p for n, p in head.named_parameters() if n != "W" and p.requires_grad]
    groups = [
        {"params": rest, "lr": float(hp["lr"]), "weight_decay": 0.01},  # the reference's projector groups
        {"params": [head.W], "lr": float(hp["user_lr"]), "weight_decay": 0.0},
    ]
    stats = _fit(settings, objective, head.to(device), dataset, groups, run_dir, device, "train")
    return head.cpu().eval(), {**stats, "users": len(users), "prototypes": head.shape.prototypes}


def adapt_users(
    settings: Any, objective: Objective, head: Any, features: Features, lr: float, run_dir: Path, device: str
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Fit only the new users' mixture logits on ``features`` (their comparisons), the head frozen; returns the
    logits [n, K_p] in the order of first appearance and the stats. The head is not changed."""
    new = list(dict.fromkeys(u for u in features.users if u is not None))
    known = [u for u in new if u in head.index]
    if known:
        raise PrefrunError(f"user {known[0]!r} is already in the PAL model's user table")
    torch.manual_seed(settings.seed)
    model = NewUsers(head, len(new))
    index = torch.tensor([new.index(u) for u in features.users], dtype=torch.long)
    groups = [{"params": [model.logits], "lr": float(lr), "weight_decay": 0.0}]
    stats = _fit(
        settings, objective, model.to(device), FeatureDataset(features, index), groups, run_dir, device, "adapt"
    )
    head.cpu().eval()
    return model.logits.detach().cpu(), {**stats, "new_users": new}


@torch.no_grad()
def pal_rewards(head: Any, features: Features, user_index: torch.Tensor, batch_size: int = 256) -> list[list[float]]:
    """r_u of every real entry of every record (one list per record) for the given table rows (−1: mean mixture)."""
    out: list[list[float]] = []
    for s in range(0, len(user_index), batch_size):
        r = head(
            features.prompt[s : s + batch_size], features.items[s : s + batch_size], user_index[s : s + batch_size]
        )
        out.extend(row[m].tolist() for row, m in zip(r["rewards"], features.mask[s : s + batch_size]))
    return out
