"""The list trainer: TRL's DPOTrainer, taught to train any registered objective on lists of K responses.

What TRL does is kept: model/PEFT setup, the fused LM head (per-token log-probs without [B, T, V]
logits), precomputed reference log-probs (so no second model is held during training), accelerate,
logging. What is new: records of K responses (one forward over all ΣK sequences of a batch), the
reference log-probs per list entry (cached across runs, see ``ref_cache``), and the objective call.
The trainer never asks an objective's name; it reads the spec (reference or not, data shape).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from trl import DPOTrainer
from trl.trainer.utils import use_adapter

from prefrun.data.collator import LIST_FIELDS, RECORD_FIELDS, ListCollator, to_lists
from prefrun.data.shared_prompt import SharedPromptCollator, packing_blocker
from prefrun.errors import PrefrunError
from prefrun.lm.logprobs import response_logps
from prefrun.objectives import Objective
from prefrun.results.progress import progress, stage_message

try:
    from peft import PeftModel
except ImportError:  # pragma: no cover - peft is a dependency
    PeftModel = ()  # type: ignore[misc,assignment]


class ListTrainer(DPOTrainer):
    """Train ``objective`` on a dataset of tokenized records (prompt_ids, response_ids[K], scores[K]).

    ``ref_cache`` (optional) maps a tokenized dataset to its reference log-probs and back, so a sweep
    computes them once (see prefrun.trainers.ref_cache). ``shared_prompt`` packs each prompt once
    with its K responses in one row (see prefrun.data.shared_prompt) instead of K prompt copies.
    """

    _tag_names = ["trl", "prefrun"]

    def __init__(
        self,
        model: Any,
        objective: Objective,
        args: Any,
        train_dataset: Dataset,
        processing_class: Any,
        ref_cache: Any = None,
        shared_prompt: bool = False,
        **kwargs: Any,
    ):
        self.objective = objective
        self.ref_cache = ref_cache
        self.policy_forwards = 0  # counted for the one-pass-per-list guarantee (tests read it)
        self.reference_forwards = 0
        # Reference log-probs are always precomputed from the initial policy (= the reference) before
        # training, so TRL never loads a second model; reference-free objectives skip them entirely.
        args.precompute_ref_log_probs = True
        # transformers replaces a NaN/inf step loss by the mean of the earlier ones in the logged loss (0.0 at
        # step 1), which hid diverged runs; a non-finite step stops training instead (see stop_if_not_finite).
        args.logging_nan_inf_filter = False
        self._step_loss: torch.Tensor | None = None  # this optimizer step's loss, summed over its micro-batches
        blocker = packing_blocker(objective.spec, train_dataset.column_names)
        if shared_prompt and blocker:
            raise ValueError(f"shared-prompt packing is impossible here: {blocker}")
        pad = processing_class.pad_token_id
        collator = SharedPromptCollator(pad) if shared_prompt else ListCollator(pad, score_prompt=objective.spec.joint)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            data_collator=collator,
            **kwargs,
        )
        if "reward_shift" in objective.spec.inputs:
            self.add_callback(RunningRewardMean())
            self.args.restore_callback_states_from_checkpoint = True

    # --- data ---------------------------------------------------------------------------------------
    def _prepare_dataset(self, dataset: Dataset, processing_class: Any, args: Any, dataset_name: str) -> Dataset:
        if "prompt_ids" not in dataset.column_names:
            raise ValueError("ListTrainer expects tokenized records (prompt_ids, response_ids, scores)")
        if "kl_logratios" in self.objective.spec.inputs:
            # ``args``, not ``self.args``: DPOTrainer prepares the data before Trainer.__init__ sets the latter.
            # Evaluation sets rotate within eval batches (TRL uses the train batch size for them too).
            train = dataset_name == "train"
            batch_size = args.per_device_train_batch_size if train else args.per_device_eval_batch_size
            if batch_size <= 1:  # TRL's KTOTrainer refuses it too
                raise ValueError(
                    f"objectives with kl_logratios (KTO) need a per-device batch size > 1 (got {batch_size}): the "
                    "mismatched completions are rotated within each batch, so a batch of 1 pairs a prompt with its "
                    "own completion and z0 becomes the example's own log-ratio"
                )
            dataset = with_mismatched_completion(dataset, batch_size)
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = [
                "prompt_ids",
                "response_ids",
                "response_prompt_ids",
                *LIST_FIELDS,
                *RECORD_FIELDS,
            ]

    # --- non-finite training --------------------------------------------------------------------------
    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_loss = loss.detach() if self._step_loss is None else self._step_loss + loss.detach()
        return loss

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        # Called once per optimizer step on every rank, after the gradients are reduced and before the
        # optimizer applies them: the point where a non-finite step can stop the run without applying it.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        loss, self._step_loss = self._step_loss, None
        if loss is not None:
            self.stop_if_not_finite(loss, grad_norm)
        return grad_norm

    def stop_if_not_finite(self, loss: torch.Tensor, grad_norm: Any) -> None:
        """Raise NonFiniteTraining when any rank's step loss, or the gradient norm, is NaN or infinite.

        Every rank joins one small gather (its loss and the gradient norm), so all ranks stop together: a rank
        that stopped alone would leave the others waiting in the next step's all-reduce.
        """
        # fp16's loss scaling overflows now and then by design (the scaler skips that step and lowers the scale),
        # so there the loss alone decides; likewise where an engine does not report the norm.
        fp16 = self.accelerator.mixed_precision == "fp16"
        norm = 0.0 if grad_norm is None or fp16 else grad_norm
        local = torch.stack([loss.float().reshape(()), torch.as_tensor(norm, dtype=torch.float32).to(loss.device)])
        values = self.accelerator.gather(local.reshape(1, 2)).cpu()
        what = non_finite(values[:, 0], values[:, 1])
        if what:
            step = self.state.global_step + 1  # global_step counts the steps already applied
            raise NonFiniteTraining(
                f"training diverged at step {step}/{self.state.max_steps}: {what} (objective={self.objective.name}, "
                f"train.lr={self.args.learning_rate:g}); lower train.lr or check the training data's scores for "
                "infinite or extreme values"
            )

    # --- reference log-probs --------------------------------------------------------------------------
    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        if not self.objective.needs_reference or "ref_logps" in dataset.column_names:
            return dataset
        if self.ref_cache is not None:  # rank 0 computes and publishes under the entry's lock; a concurrent run waits
            ref_logps, cached = self.ref_cache.load_or_compute(
                dataset,
                lambda: self.compute_reference_logps(dataset, batch_size),
                store=self.accelerator.is_main_process,
            )
            if cached:
                stage_message(f"reference log-probs: cached ({sum(map(len, ref_logps)):,})")
                return dataset.add_column("ref_logps", ref_logps)
        else:
            ref_logps = self.compute_reference_logps(dataset, batch_size)
        where = "cached for the sweep" if self.ref_cache is not None else "not cached (cache.reference=off)"
        stage_message(f"reference log-probs: {sum(map(len, ref_logps)):,} computed, {where}")
        return dataset.add_column("ref_logps", ref_logps)

    def compute_reference_logps(self, dataset: Dataset, batch_size: int) -> list[list[float]]:
        """Summed reference log-probs of every response, as a list of K floats per record."""
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
        model = self.ref_model or self.model
        out: list[list[float]] = []
        device = self.accelerator.device
        model.to(device)
        for batch in progress(loader, "reference log-probs", label="batch"):
            batch = {k: v.to(device) for k, v in batch.items()}
            logps, _ = self._response_logps(model, batch, reference=True)
            lists = to_lists(logps, batch["list_index"], batch["mask"].shape[0], batch["mask"].shape[1])
            out.extend(row[m].tolist() for row, m in zip(lists.cpu(), batch["mask"].cpu()))
        return out

    # --- forward -----------------------------------------------------------------------------------
    def _response_logps(self, model: Any, batch: dict[str, torch.Tensor], reference: bool = False, count: bool = True):
        """Summed log-probs [N] and token counts [N] of the responses in ``batch`` (prefrun.lm), one forward.

        ``reference=True``: under no_grad, with the PEFT adapter swapped for the reference's.
        """
        if not reference:
            self.policy_forwards += count
            return response_logps(model, batch)
        self.reference_forwards += 1
        context: Callable[[], Any] = contextlib.nullcontext
        unwrapped = self.accelerator.unwrap_model(model)
        if isinstance(unwrapped, PeftModel):
            name = "ref" if "ref" in unwrapped.peft_config else None
            context = lambda: use_adapter(unwrapped, adapter_name=name)  # noqa: E731
        with torch.no_grad(), activation_checkpointing_off(model, self.args.activation_checkpointing_kwargs):
            with context():
                return response_logps(model, batch)

    def _compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool):
        mode = "train" if self.model.training else "eval"
        needs = self.objective.spec.inputs
        extra: dict[str, torch.Tensor] = {}
        if "kl_logratios" in needs:  # the last list slot holds the mismatched completion (KTO's z₀)
            inputs, extra["kl_logratios"] = self._split_kl_slot(model, inputs)
        mask = inputs["mask"]
        b, k = mask.shape
        logps, lengths = self._response_logps(model, inputs)
        policy_logps = to_lists(logps, inputs["list_index"], b, k)
        lengths = to_lists(lengths.to(logps.dtype), inputs["list_index"], b, k)
        ref_logps = inputs.get("ref_logps")
        extra.update({name: inputs[name] for name in needs if name in inputs})  # data fields the objective takes
        if "reward_shift" in needs:
            extra["reward_shift"] = self._running_reward_mean(policy_logps, ref_logps, mask, update=mode == "train")
        out = self.objective(policy_logps, ref_logps, inputs["scores"], mask=mask, lengths=lengths, **extra)
        metrics = out.metrics
        if self.accelerator.num_processes > 1:  # each rank's metrics describe its share of the batch only
            batch = {"policy_logps": policy_logps.detach(), "ref_logps": ref_logps, "scores": inputs["scores"]}
            batch.update(mask=mask, lengths=lengths, **{name: inputs[name] for name in needs if name in inputs})
            reduced = {name: value for name, value in extra.items() if name not in batch}
            metrics = whole_batch_metrics(self.objective, self.accelerator, batch, reduced)
        for key, value in metrics.items():
            self._metrics[mode][key].append(value)
        if mode == "train":
            # Data tokens (prompt + response per response), the same count with or without packing; summed
            # over ranks as TRL's DPOTrainer does.
            tokens = inputs["data_tokens"] if "data_tokens" in inputs else inputs["attention_mask"].sum()
            self._total_train_tokens += int(self.accelerator.gather(tokens.reshape(1)).sum().item())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if return_outputs:
            return out.loss, {"policy_logps": policy_logps}
        return out.loss

    # --- extra inputs of objectives -------------------------------------------------------------------
    def _split_kl_slot(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """Separate the mismatched-completion rows; their policy−reference log-ratios, without gradient."""
        k = inputs["mask"].shape[1]
        is_kl = inputs["list_index"][:, 1] == k - 1
        rows = ("input_ids", "attention_mask", "completion_mask", "list_index")
        main = {**inputs, **{n: inputs[n][~is_kl] for n in rows}}
        kl = {n: inputs[n][is_kl] for n in rows}
        for name in ("mask", *LIST_FIELDS):  # every per-list field loses the extra slot
            if name in inputs:
                main[name] = inputs[name][:, : k - 1]
        with torch.no_grad():
            kl_logps, _ = self._response_logps(model, kl, count=False)
        kl_logratios = kl_logps - inputs["ref_logps"][kl["list_index"][:, 0], k - 1]
        return main, self.accelerator.gather(kl_logratios.detach())

    def _running_reward_mean(self, policy_logps, ref_logps, mask, update: bool) -> torch.Tensor:
        """BCO's δ: the running mean of every implicit reward β·ρ seen in training (gathered across ranks)."""
        # Looked up each time: a resume replaces the callback with one restored from the checkpoint.
        running = next(cb for cb in self.callback_handler.callbacks if isinstance(cb, RunningRewardMean))
        if update:
            beta = float(self.objective.hparams.get("beta", 1.0))
            running.add(self.accelerator.gather((beta * (policy_logps - ref_logps))[mask].detach()))
        return torch.tensor(running.mean, device=policy_logps.device)


def whole_batch_metrics(
    objective: Objective, accelerator: Any, batch: dict[str, torch.Tensor | None], reduced: dict[str, Any]
) -> dict[str, float]:
    """The objective's metrics over the global batch of a DDP step: what one process training on all of it logs.

    ``batch``: this rank's per-example inputs of the objective ([B, K] or [B]: policy_logps, ref_logps, scores,
    mask, lengths, data fields); ``reduced``: inputs already the same on every rank (KTO's kl_logratios,
    BCO's reward_shift). Averaging the ranks' means would be wrong wherever a metric is a mean over a count
    that varies (masked list entries, KTO's desirable examples), so every rank gathers the inputs (accelerate's
    gather, as TRL's DPOTrainer logs its metrics) and evaluates the objective once more, without gradient, on
    all of them. Plain ``gather``, not ``gather_for_metrics``: the metrics describe every example the step
    trained on, and the latter's cut of a last partial batch (``gradient_state.remainder``) would hit every
    micro-batch of the last accumulation group, which the Trainer fetches before running any of them.
    """
    local = {name: t for name, t in batch.items() if t is not None}
    flags = {name for name, t in local.items() if t.dtype == torch.bool}
    local = {name: t.to(torch.uint8) if name in flags else t for name, t in local.items()}  # gloo: no bool
    # Each rank pads its lists to the longest in its own batch: pad K to the longest over ranks (padding is
    # masked out), then gather along the batch dimension.
    full = accelerator.gather(accelerator.pad_across_processes(local, dim=1))
    full = {name: t.bool() if name in flags else t for name, t in full.items()}
    policy_logps, ref_logps, scores = full.pop("policy_logps"), full.pop("ref_logps", None), full.pop("scores")
    mask, lengths = full.pop("mask"), full.pop("lengths")
    with torch.no_grad():
        return objective(policy_logps, ref_logps, scores, mask=mask, lengths=lengths, **full, **reduced).metrics


class NonFiniteTraining(PrefrunError):
    """A training step whose loss or gradient norm is NaN or infinite: the run stops, unfinished."""


def non_finite(losses: torch.Tensor, grad_norms: torch.Tensor) -> str | None:
    """What is not finite among the ranks' step losses and gradient norms ("the loss is nan and ..."), else None."""
    what = []
    for name, values in (("the loss", losses), ("the gradient norm", grad_norms)):
        bad = values[~torch.isfinite(values)]
        if bad.numel():
            what.append(f"{name} is {bad[0].item()}")
    return " and ".join(what) or None


@contextlib.contextmanager
def activation_checkpointing_off(model: Any, kwargs: dict | None) -> Iterator[None]:
    """TRL's ``disable_gradient_checkpointing`` through transformers' current names (the old ones warn)."""
    enabled = getattr(model, "is_activation_checkpointing", False)
    if enabled:
        model.activation_checkpointing_disable()
    try:
        yield
    finally:
        if enabled:
            model.activation_checkpointing_enable(kwargs)


class RunningRewardMean(TrainerCallback, ExportableState):
    """BCO's δ: the running mean of every implicit reward seen in training. As an ExportableState callback it
    is saved in each checkpoint's trainer_state.json and restored on resume by transformers itself, whatever
    the engine (its ``_load_from_checkpoint`` is skipped under DeepSpeed)."""

    def __init__(self, reward_sum: float = 0.0, reward_count: int = 0):
        self.reward_sum = reward_sum
        self.reward_count = reward_count

    def add(self, rewards: torch.Tensor) -> None:
        self.reward_sum += rewards.sum().item()
        self.reward_count += rewards.numel()

    @property
    def mean(self) -> float:
        return self.reward_sum / self.reward_count if self.reward_count else 0.0

    def state(self) -> dict:
        return {"args": {"reward_sum": self.reward_sum, "reward_count": self.reward_count}, "attributes": {}}


def with_mismatched_completion(dataset: Dataset, batch_size: int) -> Dataset:
    """Append to each record a completion of another record, for KTO's KL estimate z₀.

    The pairing is TRL KTOTrainer's: completions rotate by one within consecutive chunks of ``batch_size``
    records, so record i of a chunk gets the completion of record i−1 and the chunk's first record that of its
    last (x_1, y_n), (x_2, y_1), …, (x_n, y_(n−1)); a last, shorter chunk rotates within itself (a chunk of one
    record pairs it with its own completion, as in TRL). With ``batch_size`` the per-device batch and
    ``train_sampling_strategy="sequential"`` (the only order TRL allows), each batch's z₀ uses the batch's own
    completions, paired with other prompts of the batch, as in the KTO paper; with the random sampler a batch's
    mismatched completions come from its records' chunk neighbours instead, which estimates the same
    expectation. The pairing is fixed, so the reference log-probs of these rows are precomputed and cached.
    """
    responses = dataset["response_ids"]
    n = len(responses)

    def source(i: int) -> int:
        start = i - i % batch_size
        return start + (i - start - 1) % min(batch_size, n - start)

    def add(row: dict, i: int) -> dict:
        row["response_ids"] = [*row["response_ids"], responses[source(i)][0]]
        row["scores"] = [*row["scores"], 0.0]
        if "labels" in row and row["labels"] is not None:
            row["labels"] = [*row["labels"], False]
        if row.get("response_prompt_ids"):  # per-response prompts: the other completion answers this prompt
            row["response_prompt_ids"] = [*row["response_prompt_ids"], row["response_prompt_ids"][0]]
        return row

    return dataset.map(add, with_indices=True)
