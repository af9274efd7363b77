"""The reward-model trainer: TRL's RewardTrainer with prefrun's objectives on lists, one forward per step.

Parity: on the same model and batch, prefrun's ``bt`` loss (margin and centering included) equals
RewardTrainer.compute_loss, and the two trainers, started from the same weights on the same data, take the
same steps (losses and weights after them). Shared-prompt packing reads the same rewards as one row per response.
"""

from __future__ import annotations

import copy
import json
import os
import signal

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.data.collator import ListCollator
from prefrun.data.pairs import to_pairs
from prefrun.data.shared_prompt import SharedPromptCollator
from prefrun.data.synthetic import SortTask, preference_records
from prefrun.objectives import get_objective
from prefrun.trainers.reward import (
    RewardModelTrainer,
    list_rewards,
    load_backbone,
    reward_config,
    score_lists,
    tokenized_lists,
    train_reward_model,
)
from prefrun.trainers.settings import TrainSettings

MODEL_CFG = OmegaConf.create({"builtin": True, "attn_implementation": "sdpa", "dtype": "float32"})
TOL = 1e-5


def _lists(n: int, k: int, seed: int = 1) -> list[dict]:
    return preference_records(SortTask(), n, k, max_swaps=6, corrupt_prob=0.2, seed=seed)


def _pairs(n: int) -> list[dict]:
    pairs, _ = to_pairs(_lists(n, 4), "best_worst")
    return pairs


def _settings(steps: int = 3, batch: int = 4, **kw) -> TrainSettings:
    return TrainSettings(steps=steps, batch_size=batch, lr=1e-3, logging_steps=1, model=MODEL_CFG, **kw)


def _trl_rows(rows: list[dict], margins: list[float]) -> list[dict]:
    """TRL's processed preference columns: prompt + chosen, prompt + rejected, the margin."""
    return [
        {
            "chosen_ids": r["prompt_ids"] + r["response_ids"][0],
            "rejected_ids": r["prompt_ids"] + r["response_ids"][1],
            "margin": m,
        }
        for r, m in zip(rows, margins)
    ]


def _trainers(micro_model_dir, tmp_path, margin_scale: float, center: float, steps: int = 3):
    """A prefrun trainer and a TRL RewardTrainer on the same pairs, each on its own copy of the same model."""
    from datasets import Dataset
    from trl import RewardTrainer

    model, tokenizer = load_backbone(str(micro_model_dir), MODEL_CFG, "cpu", seed=0)
    pairs = _pairs(24)
    dataset = tokenized_lists(pairs, tokenizer, 128, 128)
    margins = [margin_scale * (p["scores"][0] - p["scores"][1]) for p in pairs]
    settings = _settings(steps=steps)
    ours = RewardModelTrainer(
        model=model,
        objective=get_objective("bt", margin_scale=margin_scale, center_rewards_coefficient=center),
        args=reward_config(settings, tmp_path / "ours", report_to=[]),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    args = reward_config(settings, tmp_path / "trl", report_to=[], center_rewards_coefficient=center or None)
    theirs = RewardTrainer(
        model=copy.deepcopy(model),
        args=args,
        train_dataset=Dataset.from_list(_trl_rows([dict(r) for r in dataset], margins)),
        processing_class=tokenizer,
    )
    return ours, theirs, dataset, margins


def _batches(trainer_ours, trainer_theirs, dataset, margins, n: int = 6):
    rows = [dict(dataset[i]) for i in range(n)]
    ours = ListCollator(trainer_ours.processing_class.pad_token_id)(rows)
    theirs = trainer_theirs.data_collator(_trl_rows(rows, margins[:n]))
    return ours, theirs


@pytest.mark.parametrize(("margin_scale", "center"), [(0.0, 0.0), (2.0, 0.01)], ids=["plain", "margin+centering"])
def test_bt_loss_equals_reward_trainer_before_and_after_steps(micro_model_dir, tmp_path, margin_scale, center):
    ours, theirs, dataset, margins = _trainers(micro_model_dir, tmp_path, margin_scale, center)
    batch_ours, batch_theirs = _batches(ours, theirs, dataset, margins)

    def both(model):
        with torch.no_grad():
            return ours.compute_loss(model, dict(batch_ours)).item(), theirs.compute_loss(
                model, dict(batch_theirs)
            ).item()

    before = both(ours.model)
    assert before[0] == pytest.approx(before[1], abs=TOL)
    ours.train()
    theirs.train()
    after = both(ours.model)
    assert after[0] == pytest.approx(after[1], abs=TOL)
    assert abs(after[0] - before[0]) > 1e-3  # the steps moved the model: the second comparison is a new one
    # Same weights, same data order: the two trainers took the same steps.
    ours_losses = [h["loss"] for h in ours.state.log_history if "loss" in h]
    theirs_losses = [h["loss"] for h in theirs.state.log_history if "loss" in h]
    assert len(ours_losses) == 3 and ours_losses == pytest.approx(theirs_losses, abs=TOL)
    for (name, a), (_, b) in zip(ours.model.named_parameters(), theirs.model.named_parameters()):
        assert torch.allclose(a, b, atol=TOL), name
    logged = ours.state.log_history[0]
    assert {"rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "num_tokens"} <= set(logged)


def test_the_backbone_is_a_one_output_classifier_with_the_pad_token_set(micro_model_dir):
    model, tokenizer = load_backbone(str(micro_model_dir), MODEL_CFG, "cpu")
    assert model.config.num_labels == 1 and model.score.weight.shape[0] == 1
    assert tokenizer.pad_token_id is not None and model.config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.pad_token_id != tokenizer.eos_token_id  # the pooling reads EOS, the last real token


@pytest.mark.parametrize("pad_is_eos", [False, True], ids=["own_pad", "pad_is_eos"])
def test_packed_rewards_equal_one_row_per_response(micro_model_dir, pad_is_eos):
    model, tokenizer = load_backbone(str(micro_model_dir), MODEL_CFG, "cpu")
    pad = tokenizer.eos_token_id if pad_is_eos else tokenizer.pad_token_id
    model.config.pad_token_id = pad  # pad = EOS: the pooling then reads the token before the trailing EOS
    rows = [dict(r) for r in tokenized_lists(_lists(5, 4) + _lists(2, 3, seed=2), tokenizer, 128, 128)]
    with torch.no_grad():
        unpacked = list_rewards(model, ListCollator(pad)(rows))
        packed = list_rewards(model, SharedPromptCollator(pad)(rows))
    assert unpacked.shape == (7, 4) and unpacked.std() > 1e-3
    assert torch.allclose(packed, unpacked, atol=TOL)


@pytest.mark.parametrize("shared_prompt", ["off", "on"])
def test_one_step_is_one_forward_over_all_responses(micro_model_dir, tmp_path, shared_prompt):
    model, tokenizer = load_backbone(str(micro_model_dir), MODEL_CFG, "cpu")
    rows_seen = []

    def hook(module, args, kwargs):  # noqa: ANN001 - input_ids positional (model forward) or keyword (packed path)
        rows_seen.append((args[0] if args else kwargs["input_ids"]).shape[0])

    model.model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer = RewardModelTrainer(
        model=model,
        objective=get_objective("pl_rm"),
        args=reward_config(_settings(steps=2, batch=4), tmp_path, report_to=[]),
        train_dataset=tokenized_lists(_lists(8, 5), tokenizer, 128, 128),
        processing_class=tokenizer,
        shared_prompt=shared_prompt == "on",
    )
    trainer.train()
    assert trainer.forwards == 2
    assert rows_seen == ([4 * 5] * 2 if shared_prompt == "off" else [4] * 2)  # B·K rows, or B packed rows


def test_saved_model_scores_the_same_through_reward_model_source(micro_model_dir, tmp_path):
    from prefrun.models.saving import save_policy
    from prefrun.rewards import RewardContext, build_reward

    pairs = _pairs(16)
    model, tokenizer, stats = train_reward_model(
        _settings(steps=2), get_objective("bt"), pairs, str(micro_model_dir), tmp_path / "run", "cpu"
    )
    assert stats["forwards"] == 2 and stats["examples"] == len(pairs)
    held_out = _lists(4, 4, seed=7)
    rows = [dict(r) for r in tokenized_lists(held_out, tokenizer, 128, 128)]
    in_run = torch.tensor(score_lists(model, rows, pad_token_id=tokenizer.pad_token_id))
    save_policy(model, tokenizer, tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")  # what makes it a run directory
    source = build_reward(OmegaConf.create({"name": "reward_model", "path": str(tmp_path / "run")}), RewardContext())
    scored = source.score([r["prompt"] for r in held_out], [r["responses"] for r in held_out])
    assert torch.allclose(scored, in_run, atol=TOL)  # the chat-template default gives way to how it was trained


class _SigtermAt:
    """Sends this process SIGTERM when step ``step`` begins (the preemption callback sees it at its end)."""

    def __init__(self, step: int):
        from transformers import TrainerCallback

        self.__class__ = type("SigtermAtCallback", (_SigtermAt, TrainerCallback), {})
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_preempted_run_resumes_to_the_uninterrupted_result(micro_model_dir, tmp_path):
    from prefrun.runtime.checkpoints import PREEMPT_EXIT_CODE

    settings = _settings(steps=6, checkpoint_steps=3)
    pairs = _pairs(32)
    whole, _, _ = train_reward_model(settings, get_objective("bt"), pairs, str(micro_model_dir), tmp_path / "a", "cpu")
    with pytest.raises(SystemExit) as stop:
        train_reward_model(
            settings, get_objective("bt"), pairs, str(micro_model_dir), tmp_path / "b", "cpu", callbacks=[_SigtermAt(2)]
        )
    assert stop.value.code == PREEMPT_EXIT_CODE
    assert (tmp_path / "b" / "checkpoints" / "checkpoint-2").is_dir()
    resumed, _, _ = train_reward_model(
        settings, get_objective("bt"), pairs, str(micro_model_dir), tmp_path / "b", "cpu"
    )
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    lines = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "step"][:2] == [1, 2]
