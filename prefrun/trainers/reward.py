"""Reward-model training: TRL's RewardTrainer, taught to train any reward-model objective on lists of K responses.

What TRL does is kept: the one-output sequence-classification model and its pad-token setup, dropout off,
accelerate, checkpointing, the averaged metric logging. What is new: records of K responses become one
forward over the B·K sequences (``prefrun.data.collator.ListCollator``, or the prompt packed once per list),
the rewards [B, K] go to the registered objective (``bt``, ``pl_rm``), and the model is saved so that
``reward=reward_model reward.path=<run dir>`` reads its inputs exactly as it was trained.

    r_θ(x, y) = w · h_θ(x ⊕ y)[last token]        the backbone's hidden state at the sequence's last
                                                  non-pad token (EOS included) through a linear head

The backbone is the run's SFT reference (a causal LM); the head is new (``num_labels = 1``, transformers'
initialisation, seeded by the run's seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from trl import RewardTrainer

from prefrun.data.collator import LIST_FIELDS, ListCollator, to_lists
from prefrun.data.records import Record
from prefrun.data.shared_prompt import SharedPromptCollator, packing_blocker
from prefrun.objectives import Objective
from prefrun.results.progress import Progress
from prefrun.rewards.reward_model import RENDER_KEY  # how the saved model reads its inputs (config.json)


def reward_config(settings: Any, output_dir: str | Path, device: str = "cpu", **overrides: Any) -> Any:
    """TRL's RewardConfig for ``TrainSettings``; ``overrides`` replace single fields (tests)."""
    from trl import RewardConfig

    from prefrun.trainers.settings import trainer_fields

    return RewardConfig(**{**trainer_fields(settings, output_dir, device), **overrides})


def load_backbone(path: str, model_cfg: Any, device: str, seed: int = 0) -> tuple[Any, Any]:
    """A one-output sequence classifier on the causal LM at ``path`` (its LM head dropped, a new score head
    seeded by ``seed``) and its tokenizer, whose pad token the model's config names (the pooling reads the
    last non-pad token)."""
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from prefrun.models.loading import load_tokenizer, model_dtype

    tokenizer = load_tokenizer(path, model_cfg)
    torch.manual_seed(seed)
    with suppress_seqcls_warning():  # "score.weight newly initialised", "lm_head unused": both intended
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=1,
            dtype=getattr(torch, model_dtype(model_cfg, device)),
            attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
            **({} if model_cfg.get("builtin") or Path(path).is_dir() else {"revision": model_cfg.get("revision")}),
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def list_rewards(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rewards [B, K_max] of the batch's responses (zeros on padded list entries), one forward.

    A ListCollator batch (one row per response) goes through the model's own forward and pooling, as TRL's
    RewardTrainer and every consumer of the checkpoint read it. A SharedPromptCollator batch (one row per
    list: the prompt once, then each response's segment) reads each segment's last token from the backbone's
    hidden states through the score head: each segment sees the prompt and itself only, at the positions of
    its unshared row, so the reward is the same up to float rounding.
    """
    b, k = batch["mask"].shape
    if "label_owner" not in batch:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        return to_lists(logits[:, 0], batch["list_index"], b, k)
    from prefrun.data.shared_prompt import shared_prompt_inputs

    inner = getattr(model, "module", model)  # DDP
    kwargs = shared_prompt_inputs(batch, next(inner.parameters()).dtype)
    kwargs.pop("shift_labels")
    # Through the (DDP-wrapped) model's own forward: DDP all-reduces gradients only of a forward it ran. Its
    # pooled logits read each row's last token, not each segment's, so the rewards come from the final
    # (normed) hidden states through the score head.
    hidden = model(**kwargs, output_hidden_states=True).hidden_states[-1]  # [B, T, H]: one row per list
    read = segment_reads(batch["input_ids"], batch["label_owner"], batch["list_index"], inner.config.pad_token_id)
    row = batch["list_index"][:, 0]
    rewards = inner.score(hidden[row, read]).squeeze(-1)
    return to_lists(rewards, batch["list_index"], b, k)


def segment_reads(
    input_ids: torch.Tensor, owner: torch.Tensor, list_index: torch.Tensor, pad_token_id: int | None
) -> torch.Tensor:
    """Per response of a packed batch, the position its reward is read at: its segment's last token, or, as the
    unpacked pooling reads the rightmost token that is not the pad token, the last one before trailing pad ids
    (tokenizers whose pad token is EOS)."""
    n = list_index.shape[0]
    rows, positions = (owner >= 0).nonzero(as_tuple=True)
    who = owner[rows, positions]
    # Position i of a segment predicts token i + 1: the first owned position is the segment's head (the last
    # prompt token's copy), the last owned one precedes the response's last token.
    first = torch.full((n,), owner.shape[1], dtype=torch.long, device=owner.device).scatter_reduce(
        0, who, positions, "amin"
    )
    read = torch.full((n,), -1, dtype=torch.long, device=owner.device).scatter_reduce(0, who, positions, "amax") + 1
    if pad_token_id is not None:
        ids = input_ids[list_index[:, 0]]
        while True:
            back = (ids.gather(1, read[:, None])[:, 0] == pad_token_id) & (read > first)
            if not bool(back.any()):
                break
            read = read - back.long()
    return read


class RewardModelTrainer(RewardTrainer):
    """Train a reward-model ``objective`` on tokenized records (prompt_ids, response_ids[K], scores[K]).

    ``shared_prompt`` packs each prompt once with its K responses in one row (prefrun.data.shared_prompt).
    """

    _tag_names = ["trl", "reward-trainer", "prefrun"]

    def __init__(
        self,
        model: Any,
        objective: Objective,
        args: Any,
        train_dataset: Dataset,
        processing_class: Any,
        shared_prompt: bool = False,
        **kwargs: Any,
    ):
        if objective.trains != "reward_model":
            raise ValueError(f"objective {objective.name!r} trains a policy, not a reward model")
        self.objective = objective
        self.forwards = 0  # model forwards in training (one per micro-batch: tests read it)
        blocker = packing_blocker(objective.spec, train_dataset.column_names)
        if shared_prompt and blocker:
            raise ValueError(f"shared-prompt packing is impossible here: {blocker}")
        pad = processing_class.pad_token_id
        collator = SharedPromptCollator(pad) if shared_prompt else ListCollator(pad)
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            processing_class=processing_class,
            **kwargs,
        )

    def _prepare_dataset(self, dataset: Dataset, processing_class: Any, args: Any, dataset_name: str) -> Dataset:
        if "prompt_ids" not in dataset.column_names:
            raise ValueError("RewardModelTrainer expects tokenized records (prompt_ids, response_ids, scores)")
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "response_ids", *LIST_FIELDS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001 - Trainer's
        mode = "train" if self.model.training else "eval"
        self.forwards += 1
        rewards = list_rewards(model, inputs)
        out = self.objective.reward_loss(rewards, inputs["scores"], mask=inputs["mask"])
        # Every rank logs the mean over ranks of each metric (as TRL's gather_for_metrics(...).mean()).
        names = list(out.metrics)
        values = torch.tensor([out.metrics[n] for n in names], device=rewards.device)
        values = self.accelerator.gather(values[None]).mean(dim=0)
        for name, value in zip(names, values.tolist()):
            self._metrics[mode][name].append(value)
        if mode == "train":
            # Data tokens (prompt + response per response), the same count with or without packing.
            tokens = inputs["data_tokens"] if "data_tokens" in inputs else inputs["attention_mask"].sum()
            self._total_train_tokens += int(self.accelerator.gather(tokens.reshape(1)).sum().item())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (out.loss, {"rewards": rewards}) if return_outputs else out.loss


def tokenized_lists(records: list[Record], tokenizer: Any, max_prompt_len: int, max_response_len: int) -> Dataset:
    """Records as the reward model reads them: prompt_ids, response_ids[K] (EOS included), scores[K]."""
    from prefrun.trainers.preference import tokenized_dataset

    return tokenized_dataset(records, tokenizer, max_prompt_len, max_response_len)


@torch.no_grad()
def score_lists(
    model: Any, rows: list[dict[str, Any]], *, pad_token_id: int, batch_size: int = 64, stage: str = "rm scores"
) -> list[list[float]]:
    """The model's rewards of every response of tokenized ``rows`` (one list of K floats per row), no gradient."""
    collate = ListCollator(pad_token_id)
    device = next(model.parameters()).device
    out: list[list[float]] = []
    shown = Progress(stage, len(rows), label="lists", unit="list")
    for start in range(0, len(rows), batch_size):
        chunk = [
            {"prompt_ids": r["prompt_ids"], "response_ids": r["response_ids"]} for r in rows[start : start + batch_size]
        ]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        rewards = list_rewards(model, batch).float().cpu()
        out.extend(row[m].tolist() for row, m in zip(rewards, batch["mask"].cpu()))
        shown.update(len(chunk))
    shown.close()
    return out


def train_reward_model(
    settings: Any,
    objective: Objective,
    records: list[Record],
    backbone_path: str,
    run_dir: Path,
    device: str,
    *,
    callbacks: list[Any] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train ``objective`` from the causal LM at ``backbone_path`` with a new scalar head; (model, tokenizer, stats).

    Checkpoints under ``run_dir/checkpoints`` (``run.checkpoint_steps``), resumes from the last complete one,
    checkpoints and exits on SIGTERM/SIGUSR1, logs every step to ``run_dir/metrics.jsonl`` (stage "train").
    ``callbacks``: more TrainerCallbacks, run before the preemption check of each step.
    """
    from prefrun.data.shared_prompt import use_shared_prompt
    from prefrun.results.metrics_log import MetricsFile, MetricsFileCallback
    from prefrun.results.progress import attach_progress
    from prefrun.runtime.checkpoints import last_complete_checkpoint, train_resumable
    from prefrun.runtime.distributed import is_main_process

    s = settings
    model, tokenizer = load_backbone(backbone_path, s.model, device, s.seed)
    dataset = tokenized_lists(records, tokenizer, s.max_prompt_len, s.max_response_len)
    shared_prompt = use_shared_prompt(s.shared_prompt, dataset, objective.spec)
    args = reward_config(s, run_dir / "checkpoints", device)
    trainer = RewardModelTrainer(
        model=model,
        objective=objective,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        shared_prompt=shared_prompt,
        callbacks=[
            MetricsFileCallback(MetricsFile(run_dir / "metrics.jsonl"), "train", is_main_process()),
            *(callbacks or []),
        ],
    )
    attach_progress(trainer, "train")  # step/total, rate, ETA, loss, margin and accuracy
    resume_from = last_complete_checkpoint(args.output_dir) if s.resume else None
    train_resumable(trainer, resume_from)
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    setattr(
        model.config,
        RENDER_KEY,
        {"render": "records", "max_prompt_len": s.max_prompt_len, "max_response_len": s.max_response_len},
    )
    stats = {
        "examples": len(dataset),
        "responses": sum(len(r) for r in dataset["response_ids"]),
        "world_size": trainer.accelerator.num_processes,
        "shared_prompt": shared_prompt,
        "forwards": trainer.forwards,
        "train_runtime_s": trainer.state.log_history[-1].get("train_runtime") if trainer.state.log_history else None,
        "num_tokens": trainer._total_train_tokens,
    }
    return model, tokenizer, stats
