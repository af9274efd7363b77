"""The online trainer on the micro model: objectives get old_logps, the samples are on-policy at a round's start,
the reference is the starting model, and every step and round is logged once."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.data.synthetic import SortTask, eval_prompts
from prefrun.generation import SamplingSettings
from prefrun.objectives.registry import ObjectiveOutput, get_objective, register
from prefrun.online.rounds import OnlineSettings, Rounds
from prefrun.online.trainer import train_online
from prefrun.rewards import build_reward
from prefrun.trainers.settings import TrainSettings

SEEN: list[dict[str, torch.Tensor]] = []


@register("_online_probe", data="list", needs_reference=True)
def _probe(policy_logps, ref_logps, scores, mask, lengths, old_logps, *, beta: float = 0.1) -> ObjectiveOutput:
    """A centred-reward policy gradient on the log-ratios that records what it was given."""
    SEEN.append({"policy": policy_logps.detach().clone(), "old": old_logps, "ref": ref_logps, "mask": mask})
    centred = (scores - (scores * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)) * mask
    return ObjectiveOutput(-(centred * beta * (policy_logps - ref_logps)).sum() / mask.sum(), {})


def _run(tmp_path, model_dir, peft=None, steps=3, fn="distinct_words"):
    model_cfg = OmegaConf.create(
        {
            "builtin": True,
            "attn_implementation": "sdpa",
            "dtype": "float32",
            "peft": peft,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        }
    )
    settings = TrainSettings(
        steps=steps, batch_size=4, lr=1e-2, logging_steps=1, model=model_cfg, cache_dir=str(tmp_path / "cache")
    )
    prompts = eval_prompts(SortTask(), 8, seed=0)
    reward = build_reward(OmegaConf.create({"name": "python", "fn": f"online_rewards:{fn}"}))

    def rounds(tokenizer, metrics):
        return Rounds(
            prompts=prompts,
            tokenizer=tokenizer,
            settings=OnlineSettings(k=3, update_every=2),
            sampling=SamplingSettings(),
            reward=reward,
            shape="list",
            min_k=2,
            with_reference=True,
            prompts_per_step=4,
            steps_per_round=2,
            directory=tmp_path / "online",
            metrics=metrics,
        )

    SEEN.clear()
    return train_online(settings, get_objective("_online_probe"), rounds, str(model_dir), tmp_path, "cpu")


@pytest.mark.parametrize("peft", [None, "lora"])
def test_old_logps_reach_the_objective_and_are_the_sampling_policys(tmp_path, micro_model_dir, peft):
    _, _, stats = _run(tmp_path, micro_model_dir, peft)
    assert stats["steps"] == 3 and len(SEEN) == 3
    first, second, third = SEEN
    assert first["old"].shape == first["policy"].shape
    real = first["mask"]
    # step 1 starts round 0: the policy samples, so log π_θ(y) = old_logps, and π_θ = π_ref (no update yet)
    assert torch.allclose(first["policy"][real], first["old"][real], atol=1e-4)
    assert torch.allclose(first["ref"][real], first["old"][real], atol=1e-4)
    # step 2 trains on round 0's other prompts after one update: old_logps stay those of the sampling policy
    real = second["mask"]
    assert (second["policy"][real] - second["old"][real]).abs().max() > 1e-3
    # step 3 starts round 1, sampled from the updated policy; the reference is still the starting model
    real = third["mask"]
    assert torch.allclose(third["policy"][real], third["old"][real], atol=1e-4)
    assert (third["ref"][real] - third["old"][real]).abs().max() > 1e-3
    assert len(list((tmp_path / "online").glob("round-*.jsonl"))) == 2
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["stage"] == "train" and r["kind"] == "step"] == [1, 2, 3]
    assert [(r["step"], r["round"]) for r in lines if r["stage"] == "online"] == [(1, 0), (3, 1)]
    assert "online/reward_mean" in next(r for r in lines if r["stage"] == "train")  # and thus in W&B


def test_a_step_whose_lists_are_all_tied_changes_no_weight(tmp_path, micro_model_dir):
    from transformers import AutoModelForCausalLM

    policy, _, stats = _run(tmp_path, micro_model_dir, steps=2, fn="constant")
    assert stats["steps"] == 2 and SEEN == []  # the objective never ran
    start = AutoModelForCausalLM.from_pretrained(micro_model_dir).state_dict()
    assert all(torch.equal(value, start[name]) for name, value in policy.state_dict().items())
    rounds = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["online/skipped_steps"] for r in rounds if r["stage"] == "online"] == [2.0]


@register("_online_pchosen_probe", data="pairwise", needs_reference=True)
def _pchosen_probe(policy_logps, ref_logps, scores, mask, lengths, p_chosen=None, *, beta: float = 0.1):
    """iREPO's shape of input: records what p_chosen it was given next to the pair's scores."""
    SEEN.append({"scores": scores.detach().clone(), "p_chosen": p_chosen})
    return ObjectiveOutput(-(beta * (policy_logps - ref_logps)[:, 0]).mean(), {})


def test_an_objective_taking_p_chosen_gets_the_reward_sources_preference_of_each_pair(tmp_path, micro_model_dir):
    settings = TrainSettings(
        steps=2, batch_size=4, lr=1e-3, logging_steps=1, cache_dir=str(tmp_path / "cache"),
        model=OmegaConf.create({"builtin": True, "attn_implementation": "sdpa", "dtype": "float32", "peft": None}),
    )  # fmt: skip
    reward = build_reward(OmegaConf.create({"name": "python", "fn": "online_rewards:distinct_words"}))

    def rounds(tokenizer, metrics):
        return Rounds(
            prompts=eval_prompts(SortTask(), 8, seed=0), tokenizer=tokenizer, settings=OnlineSettings(k=3),
            sampling=SamplingSettings(), reward=reward, shape="best_worst", min_k=2, with_reference=True,
            prompts_per_step=4, steps_per_round=1, directory=tmp_path / "online", metrics=metrics, preferences=True,
        )  # fmt: skip

    SEEN.clear()
    train_online(settings, get_objective("_online_pchosen_probe"), rounds, str(micro_model_dir), tmp_path, "cpu")
    assert SEEN and all(s["p_chosen"] is not None for s in SEEN)
    for seen in SEEN:  # a python reward's prefer is Bradley–Terry on its scores: σ(s_w − s_l)
        expected = torch.sigmoid(seen["scores"][:, 0] - seen["scores"][:, 1])
        torch.testing.assert_close(seen["p_chosen"].double(), expected.double(), atol=1e-6, rtol=0)
