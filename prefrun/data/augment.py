"""Reward-augmented preference data (Zhang et al. 2024, arXiv 2410.08067): condition pairs on a goal score.

Each pair (x, y_w, y_l) with scores s_w ≥ s_l becomes two pairs under a goal g(s):

    (g(s_w) + x,  chosen y_w, rejected y_l)
    (g(s_l) + x,  chosen y_l, rejected y_w)     # under the lower goal, the worse response is preferred

g(s) is a system message (chat prompts), or, with ``system_role=False`` (models without a system role,
the paper's ``_nosys`` variant) and for plain-text prompts, text put before the first user turn. Scores
that are whole numbers print without ".0". Any pairwise objective trains on the result unchanged.
"""

from __future__ import annotations

from typing import Any

from prefrun.data.records import Record

GOAL = (
    "You are an assistant that generates responses to the instruction, implicitly achieving the following "
    "target scores (on a scale of 1-10, where a higher score is better): Overall score: {score}."
)


def goal_text(score: float) -> str:
    return GOAL.format(score=int(score) if float(score).is_integer() else score)


def _with_goal(prompt: Any, score: float, system_role: bool) -> Any:
    goal = goal_text(score)
    if isinstance(prompt, list):
        if system_role:
            return [{"role": "system", "content": goal}, *prompt]
        first = next(i for i, m in enumerate(prompt) if m["role"] == "user")
        user = {**prompt[first], "content": f"{goal}\n\n{prompt[first]['content']}"}
        return [*prompt[:first], user, *prompt[first + 1 :]]
    return f"{goal}\n\n{prompt}"


def reward_conditioned(pairs: list[Record], system_role: bool = True) -> list[Record]:
    """Two goal-conditioned pairs per input pair (chosen first, scores [1, 0]); pairs with s_w < s_l are dropped."""
    out = []
    for pair in pairs:
        (y_w, y_l), (s_w, s_l) = pair["responses"], pair["scores"]
        if s_w < s_l:
            continue
        base = {k: v for k, v in pair.items() if k not in ("prompt", "responses", "scores")}
        out.append(
            {
                **base,
                "prompt": _with_goal(pair["prompt"], s_w, system_role),
                "responses": [y_w, y_l],
                "scores": [1.0, 0.0],
            }
        )
        out.append(
            {
                **base,
                "prompt": _with_goal(pair["prompt"], s_l, system_role),
                "responses": [y_l, y_w],
                "scores": [1.0, 0.0],
            }
        )
    return out
