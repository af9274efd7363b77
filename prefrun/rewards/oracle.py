"""``reward=oracle``: the synthetic task's own reward, exact.

    score:  S[b, k] = r(x_b, y_bk)                 e.g. sort: 1 − inversions / (n(n−1)/2), 0 if malformed
    prefer: P_ij = 1 if r_i > r_j, 0 if r_i < r_j, ½ on a tie   (a hard, noiseless preference)

A hard preference rather than σ(r_i − r_j): the oracle is the ground truth an annotator would report
without error, and a tie (two equally good answers) carries no preference either way.
"""

from __future__ import annotations

import math
from typing import Any

from prefrun.errors import PrefrunError
from prefrun.rewards import REWARDS
from prefrun.rewards.base import RewardContext, RewardSource, hard_preference


def require_oracle(context: RewardContext, source: str) -> Any:
    if context.oracle is None:
        raise PrefrunError(
            f"reward={source} needs a task with an oracle (dataset=sort); this dataset has none: "
            "choose reward=reward_model, reward=judge or reward=python"
        )
    return context.oracle


@REWARDS.register("oracle")
class OracleReward(RewardSource):
    name = "oracle"
    link = staticmethod(hard_preference)

    def __init__(self, cfg: Any, context: RewardContext) -> None:
        super().__init__()
        self.oracle = require_oracle(context, "oracle")

    def _score_flat(self, prompts: list[Any], responses: list[str]) -> list[float]:
        out = []
        for prompt, response in zip(prompts, responses):
            value = self.oracle(prompt, response)
            out.append(math.nan if value is None else float(value))
        return out
