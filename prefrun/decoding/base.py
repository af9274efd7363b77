"""What a decoder is and what it reports: the answers, and their cost in model forwards and reward calls.

A decoder is a class registered by name (``DECODERS.register("bon")``), built from its config block and a
reward-source factory, with one method::

    decode(model, tokenizer, prompts, prompt_ids, settings: SamplingSettings) -> Decoded

It returns one answer per prompt (``Samples`` with K = 1) and a report. Every report holds the cost of the
answers, per response, so decoders can be compared at equal compute:

    forward_calls     batched forward passes of the model / responses
    forward_tokens    query positions the model computed (rows × new positions of each forward) / responses
    prefills          prompt rows the model read whole (forwards over more than one position) / responses:
                      1 when each prompt is prefilled once, N when N samples each prefill their own copy
    reward_calls      calls of the reward source's score or prefer / responses (a call scores a whole batch)
    reward_responses  responses the reward source scored / responses
    wall_s            seconds of decoding / responses

The forwards are counted by a pre-forward hook on the model (``ForwardCounter``), so they are what ran,
not what the decoder believes it ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from prefrun.errors import PrefrunError


@dataclass
class Decoded:
    samples: Any  # prefrun.generation.Samples with K = 1: one answer per prompt
    report: dict[str, float] = field(default_factory=dict)
    beams: Any = None  # a decoder's whole candidate list per prompt, when it has one (Samples, K = B)


class Decoder(Protocol):
    name: str
    needs_reward: bool

    def decode(
        self, model: Any, tokenizer: Any, prompts: list[Any], prompt_ids: list[list[int]], settings: Any
    ) -> Decoded:
        """One answer per prompt and the report (module docstring)."""


class ForwardCounter:
    """Counts a model's forward passes while active: calls, query positions and prefilled rows.

    A forward over input ids (or embeddings) of shape [rows, positions] adds rows · positions to ``tokens``
    and, when positions > 1, rows to ``prefill_rows`` (a prompt read whole, not one decoding step).
    """

    def __init__(self, model: Any) -> None:
        self.model, self.calls, self.tokens, self.prefill_rows = model, 0, 0, 0
        self._handle: Any = None

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        if x is None:
            return
        rows, positions = int(x.shape[0]), int(x.shape[1]) if x.dim() > 1 else 1
        self.calls += 1
        self.tokens += rows * positions
        self.prefill_rows += rows if positions > 1 else 0

    def __enter__(self) -> ForwardCounter:
        self._handle = self.model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


class Costs:
    """Times a decoding and counts its forwards and reward calls; ``per_response(n)`` is the report's cost part."""

    def __init__(self, model: Any) -> None:
        self.counter = ForwardCounter(model)
        self.reward_calls = 0
        self.reward_responses = 0
        self.wall_s = 0.0

    def __enter__(self) -> Costs:
        self._started = time.perf_counter()
        self.counter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.counter.__exit__(*exc)
        self.wall_s += time.perf_counter() - self._started

    def per_response(self, responses: int) -> dict[str, float]:
        n = max(responses, 1)
        return {
            "forward_calls": self.counter.calls / n,
            "forward_tokens": self.counter.tokens / n,
            "prefills": self.counter.prefill_rows / n,
            "reward_calls": self.reward_calls / n,
            "reward_responses": self.reward_responses / n,
            "wall_s": self.wall_s / n,
        }


def positive_int(cfg: Any, key: str, meaning: str, example: str) -> int:
    """``cfg[key]`` as an integer ≥ 1, or a one-line error naming ``decode.<key>``."""
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PrefrunError(f"decode.{key}={value!r}: must be an integer ≥ 1 ({meaning}); e.g. decode.{key}={example}")
    return int(value)
