"""Training a UNet on denoising errors: one routine for the errors, one transformers Trainer for every use.

``denoising_errors`` is the one place ℓ(x) = mean over pixels of (ε − ε_θ(√ᾱ_t·x + √(1−ᾱ_t)·ε, t))² is
computed: training, the reference's pretraining, held-out implicit accuracy and the quality guard all call
it. ``pair_errors`` noises a pair's winner and loser with the *same* ε and t (Wallace et al. 2023; the
official code's ``noise.chunk(2)[0].repeat(2, 1, 1, 1)``), one forward over the 2B images.

``DiffusionTrainer`` subclasses ``transformers.Trainer``, so checkpoints (weights, optimizer, scheduler, RNG
states: the noise and timesteps a resumed run draws continue the same stream), resume, the learning-rate
schedule, W&B, metrics.jsonl and the progress display are the text trainers' own. Its loss is the
registered objective on ``policy_logps = −ℓ_θ`` and ``ref_logps = −ℓ_ref`` ([B, 2], winner first); the
reference is a frozen UNet, or the same UNet with its LoRA adapter turned off. Without an objective it is
the plain denoising loss on single images (the reference's pretraining).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer

from prefrun.objectives import Objective

Condition = torch.Tensor | dict[str, torch.Tensor] | None  # class labels [N], or a latent pair's text condition


def unet_kwargs(condition: Condition, device: Any) -> dict[str, Any]:
    """The U-Net's conditioning arguments: ``class_labels`` (UNet2DModel), or ``encoder_hidden_states`` with SDXL's
    ``added_cond_kwargs`` (UNet2DConditionModel)."""
    if condition is None:
        return {}
    if isinstance(condition, torch.Tensor):
        return {"class_labels": condition.to(device)}
    kwargs: dict[str, Any] = {"encoder_hidden_states": condition["encoder_hidden_states"].to(device)}
    if "text_embeds" in condition:
        kwargs["added_cond_kwargs"] = {k: condition[k].to(device) for k in ("text_embeds", "time_ids")}
    return kwargs


def repeat_twice(condition: Condition) -> Condition:
    """The condition of [winners; losers]: each pair's own, twice."""
    if condition is None:
        return None
    if isinstance(condition, torch.Tensor):
        return torch.cat([condition, condition])
    return {k: torch.cat([v, v]) for k, v in condition.items()}


def condition_of(inputs: dict[str, Any]) -> Condition:
    """A batch's condition: its text condition (latent pairs), its classes, or None."""
    from prefrun.diffusion.latent import TEXT_KEYS

    if "encoder_hidden_states" in inputs:
        return {k: inputs[k] for k in TEXT_KEYS if k in inputs}
    return inputs.get("classes")


def denoising_errors(
    unet: Any, scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, condition: Condition
) -> torch.Tensor:
    """ℓ [N]: the per-sample mean squared error of the UNet's noise prediction on x_t = add_noise(x0, ε, t)."""
    device = next(unet.parameters()).device
    x0, noise, t = x0.to(device), noise.to(device), t.to(device)
    x_t = scheduler.add_noise(x0, noise, t)
    pred = unet(x_t, t, **unet_kwargs(condition, device)).sample
    return (pred.float() - noise.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))


def shared_noise(
    x_w: torch.Tensor, num_train_timesteps: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε [2B, ...], t [2B]): one noise and one timestep per pair, repeated for its winner and its loser."""
    b = x_w.shape[0]
    noise = torch.randn(x_w.shape, generator=generator, device=x_w.device, dtype=x_w.dtype)
    t = torch.randint(0, num_train_timesteps, (b,), generator=generator, device=x_w.device)
    return noise.repeat(2, *([1] * (x_w.ndim - 1))), t.repeat(2)


def pair_errors(
    unet: Any,
    scheduler: Any,
    x_w: torch.Tensor,
    x_l: torch.Tensor,
    condition: Condition,
    noise: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """ℓ [B, 2] (winner, loser) under shared noise and timesteps, in one forward of 2B images."""
    x = torch.cat([x_w, x_l])
    err = denoising_errors(unet, scheduler, x, noise, t, repeat_twice(condition))
    return torch.stack(err.chunk(2), dim=1)


def reference_errors(unet: Any, reference: Any, compute: Any) -> torch.Tensor:
    """``compute(model)`` under the reference, without gradients: the frozen UNet, or the adapter turned off."""
    from prefrun.diffusion.models import set_adapters

    with torch.no_grad():
        if reference is not None:
            return compute(reference)
        set_adapters(unet, False)
        try:
            return compute(unet)
        finally:
            set_adapters(unet, True)


class PairDataset(torch.utils.data.Dataset):
    """Pairs (x_w, x_l, class or text condition) or single images (x, class) as the dict rows the Trainer's
    collator stacks."""

    def __init__(
        self,
        first: torch.Tensor,
        second: torch.Tensor | None,
        classes: torch.Tensor | None,
        condition: dict[str, torch.Tensor] | None = None,
    ):
        self.first, self.second, self.classes, self.condition = first, second, classes, condition

    def __len__(self) -> int:
        return len(self.first)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = {"x_w": self.first[i]} if self.second is not None else {"x": self.first[i]}
        if self.second is not None:
            row["x_l"] = self.second[i]
        if self.classes is not None:
            row["classes"] = self.classes[i]
        for key, value in (self.condition or {}).items():
            row[key] = value[i]
        return row


class DiffusionTrainer(Trainer):
    """Train ``model`` (a UNet) on ``objective`` over pairs, or on the denoising loss of single images.

    ``reference``: the frozen reference UNet (None under LoRA, where the adapter is turned off instead, or
    for a reference-free objective). Counts its forwards (``policy_forwards``, ``reference_forwards``).
    """

    def __init__(
        self, *args: Any, objective: Objective | None, noise_scheduler: Any, reference: Any = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.noise_scheduler = noise_scheduler
        self.reference = reference
        self.policy_forwards = self.reference_forwards = 0
        self._logged: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        steps = int(self.noise_scheduler.config.num_train_timesteps)
        classes = condition_of(inputs)
        if self.objective is None:
            x = inputs["x"]
            noise = torch.randn_like(x)
            t = torch.randint(0, steps, (x.shape[0],), device=x.device)
            loss = denoising_errors(model, self.noise_scheduler, x, noise, t, classes).mean()
            self.policy_forwards += 1
            self._logged["mse"].append(loss.item())
            return (loss, None) if return_outputs else loss
        x_w, x_l = inputs["x_w"], inputs["x_l"]
        noise, t = shared_noise(x_w, steps)
        errors = pair_errors(model, self.noise_scheduler, x_w, x_l, classes, noise, t)
        self.policy_forwards += 1
        ref_logps = None
        if self.objective.needs_reference:
            unet = self.accelerator.unwrap_model(model)
            ref = reference_errors(
                unet, self.reference, lambda m: pair_errors(m, self.noise_scheduler, x_w, x_l, classes, noise, t)
            )
            self.reference_forwards += 1
            ref_logps = -ref
        scores = torch.tensor([[1.0, 0.0]], device=x_w.device).expand(x_w.shape[0], 2)
        out = self.objective(-errors, ref_logps, scores)
        for key, value in out.metrics.items():
            self._logged[key].append(value)
        return (out.loss, None) if return_outputs else out.loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the objective's metrics, averaged over the steps since the last log, to the Trainer's line."""
        if "loss" in logs:
            logs = {**logs, **{k: sum(v) / len(v) for k, v in self._logged.items() if v}}
            self._logged.clear()
        super().log(logs, *args, **kwargs)


def training_arguments(settings: Any, output_dir: Any, device: str, **overrides: Any) -> Any:
    """transformers' TrainingArguments from ``TrainSettings``, through the fields every prefrun trainer shares."""
    import dataclasses

    from transformers import TrainingArguments

    from prefrun.trainers.settings import trainer_fields

    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    fields = {k: v for k, v in trainer_fields(settings, output_dir, device).items() if k in known}
    fields.update(overrides)
    return TrainingArguments(**fields)
