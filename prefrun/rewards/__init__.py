"""Reward sources: who scores a list of responses, or says which of two is better (``reward=<name>``).

oracle        the synthetic task's reward                          (conf/reward/oracle.yaml)
noisy_oracle  M simulated annotators flipping with probability q   (conf/reward/noisy_oracle.yaml)
reward_model  a sequence-classification checkpoint (Bradley–Terry) (conf/reward/reward_model.yaml)
judge         a generative LLM judge, Auto-J prompts and parser    (conf/reward/judge.yaml)
python        a function by import path, TRL's reward signature    (conf/reward/python.yaml)

source = build_reward(cfg.reward, RewardContext(oracle=data.reward_fn, device=..., words=data.words))
source.score(prompts, lists)   # [B, K]
source.prefer(prompts, lists)  # [B, K, K]
source.stats()
"""

from __future__ import annotations

from typing import Any

from prefrun.errors import PrefrunError
from prefrun.registry import Registry
from prefrun.rewards.base import RewardContext, RewardSource

REWARDS = Registry(
    "reward source",
    modules=(
        "prefrun.rewards.oracle",
        "prefrun.rewards.noisy_oracle",
        "prefrun.rewards.reward_model",
        "prefrun.rewards.judge",
        "prefrun.rewards.python",
    ),
    config_key="reward",
)


def build_reward(reward_cfg: Any, context: RewardContext | None = None) -> RewardSource:
    """The reward source ``reward_cfg.name`` names, built from its own settings (conf/reward/<name>.yaml)."""
    name = reward_cfg.get("name") if reward_cfg is not None else None
    if not name:
        raise PrefrunError(f"reward.name is not set; choose a reward source: reward=<{'|'.join(REWARDS.names())}>")
    return REWARDS.get(str(name))(reward_cfg, context or RewardContext())


__all__ = ["REWARDS", "RewardContext", "RewardSource", "build_reward"]
