"""``reward=python``: any function given by import path, with the signature of TRL's reward functions.

    reward.fn = "my_module:my_reward"
    def my_reward(prompts: list, completions: list, **kwargs) -> list[float | None]

    score:  S[b, k] = fn(prompts, completions)[n(b, k)]     one call per score(), the B·K pairs flattened
    prefer: P_ij = σ(s_i − s_j)  (Bradley–Terry; reward.preference=hard gives 1 / 0 / ½ on ties)

As TRL's online trainers call ``reward_funcs`` (GRPOTrainer, RLOOTrainer): one prompt per completion, a
conversational prompt (a message list) paired with its completion as ``[{"role": "assistant", "content":
text}]``, extra keyword arguments from ``reward.kwargs``; a None in the returned list is a response the
function could not score (NaN). TRL's ``completion_ids`` and ``trainer_state`` are not passed.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.errors import PrefrunError
from prefrun.rewards import REWARDS
from prefrun.rewards.base import RewardContext, RewardSource, bradley_terry, hard_preference

FORM = "give reward.fn=<module>:<function>, the module importable (on PYTHONPATH)"
LINKS = {"bradley_terry": bradley_terry, "hard": hard_preference}


def load_function(spec: Any) -> Any:
    """``module:function`` → the callable; a bad spec is a one-line error naming reward.fn."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise PrefrunError(f"reward.fn={spec!r} is not of the form module:function; {FORM}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure while importing the user's module is reported in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PrefrunError(f"reward.fn={spec!r}: cannot import {module_name!r} ({first}); {FORM}") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise PrefrunError(f"reward.fn={spec!r}: {module_name!r} has no function {attr!r}; {FORM}")
    return fn


@REWARDS.register("python")
class PythonReward(RewardSource):
    name = "python"

    def __init__(self, cfg: Any, context: RewardContext) -> None:
        super().__init__()
        self.spec = cfg.get("fn")
        self.fn = load_function(self.spec)
        kwargs = cfg.get("kwargs") or {}
        self.kwargs = OmegaConf.to_container(kwargs, resolve=True) if isinstance(kwargs, DictConfig) else dict(kwargs)
        preference = str(cfg.get("preference", "bradley_terry"))
        if preference not in LINKS:
            raise PrefrunError(f"reward.preference={preference!r} must be one of {', '.join(LINKS)}")
        self.link = LINKS[preference]

    def _score_flat(self, prompts: list[Any], responses: list[str]) -> list[float]:
        completions = [
            [{"role": "assistant", "content": r}] if isinstance(p, list) else r for p, r in zip(prompts, responses)
        ]
        values = self.fn(prompts=list(prompts), completions=completions, **self.kwargs)
        try:
            values = list(values)
        except TypeError:
            raise PrefrunError(f"reward.fn={self.spec!r} returned {type(values).__name__}, not a list") from None
        if len(values) != len(prompts):
            raise PrefrunError(
                f"reward.fn={self.spec!r} returned {len(values)} values for {len(prompts)} completions; "
                "return one float (or None) per completion"
            )
        out = []
        for v in values:
            try:
                out.append(math.nan if v is None else float(v))
            except (TypeError, ValueError):
                raise PrefrunError(f"reward.fn={self.spec!r} returned {v!r}; return floats or None") from None
        return out
