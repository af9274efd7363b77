"""Reward functions for the online tests (``reward=python reward.fn=online_rewards:<name>``), TRL's signature."""

from __future__ import annotations


def _text(completion) -> str:
    return completion[0]["content"] if isinstance(completion, list) else completion


def distinct_words(prompts, completions, **kwargs):
    """How many distinct words an answer has (and a little for its length): rarely a tie."""
    return [len(set(_text(c).split())) + 0.01 * len(_text(c)) for c in completions]


def flaky(prompts, completions, **kwargs):
    """Raises on any batch holding an answer of odd length, which it cannot score alone either; NaN on empties."""
    texts = [_text(c) for c in completions]
    if any(len(t) % 2 for t in texts):
        raise RuntimeError("the grader crashed")
    return [None if not t else float(len(set(t.split()))) for t in texts]


def constant(prompts, completions, **kwargs):
    """Every answer equally good: every list is tied."""
    return [1.0] * len(completions)


def unscorable(prompts, completions, **kwargs):
    """Nothing can be scored."""
    return [None] * len(completions)
