"""What a selection step sees of a record: its text, its shape, and how many records the budget keeps.

A record becomes text (``text=``) as

    prompt            the prompt alone
    prompt_response   the prompt, a newline, then the chosen response: the highest-scored one, the first
                      of tied ones (a single-response record: its response)

A chat prompt (a list of {role, content} messages) is rendered one "role: content" line per message, so
two chat datasets compare like with like. A record's *shape* is its prompt's kind, "text" or "chat": a
target set of chat prompts cannot be compared with a pool of plain-text prompts (the rendered role tags
alone would dominate a compression distance), so steps refuse the mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefrun.data.records import Record
from prefrun.errors import PrefrunError

TEXT_MODES = ("prompt", "prompt_response")


def prompt_text(prompt: Any) -> str:
    """A prompt as text: plain text as is, chat messages as "role: content" lines."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list | tuple):
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in prompt)
    return str(prompt)


def chosen_response(record: Record) -> str:
    """The record's best response: the highest score, the first of tied ones."""
    responses, scores = record["responses"], record.get("scores") or [0.0] * len(record["responses"])
    best = max(range(len(responses)), key=lambda i: (scores[i], -i))
    return str(responses[best])


def record_text(record: Record, text: str = "prompt_response") -> str:
    """The record as one string (see the module docstring for ``text``)."""
    if text == "prompt":
        return prompt_text(record["prompt"])
    if not record.get("responses"):
        raise PrefrunError("a record has no responses to select on; use data.select.text=prompt")
    return f"{prompt_text(record['prompt'])}\n{chosen_response(record)}"


def check_text_mode(text: str) -> None:
    if text not in TEXT_MODES:
        raise PrefrunError(f"data.select.text={text!r} must be one of {', '.join(TEXT_MODES)}")


def record_shape(record: Record) -> str:
    """ "chat" for a message-list prompt, else "text"."""
    return "chat" if isinstance(record.get("prompt"), list | tuple) else "text"


def check_same_shape(pool: Sequence[Record], target: Sequence[Record], target_name: str) -> None:
    """Refuse a target whose records have a prompt kind the pool's records do not have."""
    pool_shapes = {record_shape(r) for r in pool}
    target_shapes = {record_shape(r) for r in target}
    extra = target_shapes - pool_shapes
    if extra:
        raise PrefrunError(
            f"data.select.target={target_name}: its records have {'/'.join(sorted(extra))} prompts but the dataset's "
            f"have {'/'.join(sorted(pool_shapes))} prompts; choose a target of the same record shape"
        )


def check_budget(k: int | None, fraction: float | None) -> None:
    """Exactly one of ``k`` (a positive count) and ``fraction`` (in (0, 1]), or a one-line error."""
    if (k is None) == (fraction is None):
        raise PrefrunError("set exactly one of data.select.k (a count) and data.select.fraction (of the dataset)")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise PrefrunError(f"data.select.k={k!r} must be a positive integer")
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1
    ):
        raise PrefrunError(f"data.select.fraction={fraction!r} must be in (0, 1], e.g. data.select.fraction=0.2")


def budget(n: int, k: int | None, fraction: float | None) -> int:
    """How many of ``n`` records to keep: ``k``, or ``fraction`` of n (rounded down, at least 1).

    A ``k`` above the pool's size is an error, not a silent keep-all: a sweep that asks for more records
    than the data has would otherwise compare a selection with no selection.
    """
    check_budget(k, fraction)
    if n == 0:
        raise PrefrunError("data.select: the dataset has no records to select from")
    if k is not None:
        if k > n:
            raise PrefrunError(
                f"data.select.k={k} but the dataset has only {n} records; lower data.select.k or use "
                "data.select.fraction"
            )
        return k
    return max(1, int(fraction * n + 1e-9))  # 0.29 · 100 is 28.999…: count it as 29
