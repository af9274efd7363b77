"""The online trainer: the list trainer whose batches are drawn, at each optimizer step, from the current round.

The Trainer's loop is kept whole (optimizer, scheduler, logging, checkpoints, resume, callbacks); only where a
step's batches come from changes. Its dataloader yields placeholder "tickets", one per micro-batch, which keep
the Trainer's count of the data it has consumed (and so its resume position); ``get_batch_samples`` (called at
the start of each optimizer step, after the previous step's update) swaps them for the step's records from
``Rounds``, which samples a new round from the policy as it is now when the step begins one. The samples are
therefore exactly on-policy at a round's first step, and U − 1 updates old at its last (U =
``online.update_every``), as in OAIF (Guo et al. 2024) and TRL's GRPOTrainer (``steps_per_generation``).

The reference is the model the policy starts from (the cached SFT model), held once in memory (or, under LoRA,
the policy with its adapter off); its log-probs of the fresh samples are computed as each round is drawn
(the policy's come from the sampler itself), never read from the cross-run cache. A step whose records are
all gone (every list tied) runs no forward and no backward: without gradients the optimizer leaves every
weight, and its moments, as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prefrun.data.collator import to_lists
from prefrun.trainers.list_trainer import ListTrainer


def collate_tickets(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"ticket": torch.tensor([ex["ticket"] for ex in examples])}


class OnlineTrainer(ListTrainer):
    """``ListTrainer`` fed by ``rounds`` (``prefrun.online.rounds.Rounds``); ``reference_model`` None under PEFT."""

    def __init__(self, *args: Any, rounds: Any, reference_model: Any = None, logps_batch_size: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        self.rounds = rounds
        self.reference_model = reference_model
        self.logps_batch_size = logps_batch_size
        self.records_collator, self.data_collator = self.data_collator, collate_tickets

    # --- the data: tickets in the dataloader, records from the rounds --------------------------------------
    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        return dataset  # tickets: the records are made per round

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        return dataset  # reference log-probs of each round's samples are computed with them (``reference_logps``)

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        tickets, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not tickets:
            return tickets, None
        records, started = self.rounds.records_for_step(self.state.global_step, self)
        if started:  # the round's figures join the next logged line (and W&B) as well as its own line
            for key, value in started.items():
                if isinstance(value, int | float):
                    self._metrics["train"][key].append(float(value))
        n = len(tickets)
        return [self.records_collator(records[i::n]) if records[i::n] else {} for i in range(n)], None

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        if not inputs:  # nothing to learn from (every list tied): no forward, no backward
            return torch.zeros((), device=self.args.device)
        return super().training_step(model, inputs, num_items_in_batch)

    # --- what a round asks of the policy (prefrun.online.rounds.PolicyIO) -----------------------------------
    def sample(self, prompt_ids: list[list[int]], settings: Any) -> Any:
        from prefrun.generation import sample
        from prefrun.results.progress import is_quiet, set_quiet

        quiet = is_quiet()
        set_quiet(True)  # a closing line per round would drown the training progress; its figures are logged
        try:
            return sample(self.accelerator.unwrap_model(self.model), self.processing_class, prompt_ids, settings)
        finally:
            set_quiet(quiet)

    @torch.no_grad()
    def reference_logps(self, rows: list[dict[str, Any]]) -> list[list[float]]:
        """Summed log-probs of every sample under the reference (the PEFT adapter off under LoRA)."""
        reference = self.reference_model if self.reference_model is not None else self.model
        out: list[list[float]] = []
        device = self.accelerator.device
        for start in range(0, len(rows), self.logps_batch_size):
            batch = self.records_collator(rows[start : start + self.logps_batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            b, k = batch["mask"].shape
            logps, _ = self._response_logps(reference, batch, reference=True)
            lists = to_lists(logps.float(), batch["list_index"], b, k).cpu()
            out.extend(row[m].tolist() for row, m in zip(lists, batch["mask"].cpu()))
        return out


def train_online(
    settings: Any,
    objective: Any,
    rounds_factory: Any,
    reference_path: str,
    run_dir: Path,
    device: str,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train ``objective`` online from the model at ``reference_path`` (also the reference) for settings.steps.

    ``rounds_factory(tokenizer, metrics_file)`` builds the run's ``Rounds``. Returns (trained model, tokenizer,
    stats), as ``prefrun.trainers.preference.train_preference`` does; resumes from the last complete checkpoint,
    keeping the round files that checkpoint trained on.
    """
    from datasets import Dataset

    from prefrun.models.loading import load_model, load_model_and_tokenizer, lora_config
    from prefrun.results.metrics_log import MetricsFile, MetricsFileCallback
    from prefrun.results.progress import attach_progress
    from prefrun.runtime.checkpoints import checkpoint_step, last_complete_checkpoint, train_resumable
    from prefrun.runtime.distributed import is_main_process
    from prefrun.trainers.settings import dpo_config

    s = settings
    torch.manual_seed(s.seed)
    policy, tokenizer = load_model_and_tokenizer(reference_path, s.model, device)
    peft = lora_config(s.model)
    reference = None
    if peft is None:  # held for every objective: each round's KL to the reference needs its log-probs
        reference = load_model(reference_path, s.model, device).to(device).eval().requires_grad_(False)
    main_process = is_main_process()
    metrics = MetricsFile(run_dir / "metrics.jsonl")
    rounds = rounds_factory(tokenizer, metrics if main_process else None)
    args = dpo_config(s, run_dir / "checkpoints", device)
    args.train_sampling_strategy = "sequential"  # tickets: their order carries nothing
    per_device = s.per_device_batch_size or s.batch_size
    tickets = Dataset.from_dict({"ticket": list(range(s.steps * s.gradient_accumulation_steps * per_device))})
    resume_from = last_complete_checkpoint(args.output_dir) if s.resume else None
    resumed_at = checkpoint_step(resume_from) if resume_from else None
    rounds.resume_at(resumed_at)
    if resumed_at is not None and main_process:
        metrics.truncate_after(resumed_at, stage="online")  # those rounds' lines are written again
    trainer = OnlineTrainer(
        model=policy,
        objective=objective,
        args=args,
        train_dataset=tickets,
        processing_class=tokenizer,
        rounds=rounds,
        reference_model=reference,
        peft_config=peft,
        callbacks=[MetricsFileCallback(metrics, "train", main_process)],
    )
    attach_progress(trainer, "train")
    train_resumable(trainer, resume_from)
    stats = {
        "steps": trainer.state.global_step,
        "policy_forwards": trainer.policy_forwards,
        "reference_forwards": trainer.reference_forwards,
        "train_runtime_s": trainer.state.log_history[-1].get("train_runtime") if trainer.state.log_history else None,
        "num_tokens": trainer._total_train_tokens,
        "resumed_at_step": resumed_at,
    }
    return trainer.accelerator.unwrap_model(trainer.model).eval(), tokenizer, stats
