"""The reward-source protocol: score K responses per prompt, or say how likely each is preferred to each other.

    score(prompts, lists)  -> S  [B, K] float32     S[b, k] = r(x_b, y_bk); NaN = could not score
    prefer(prompts, lists) -> P  [B, K, K] float32  P[b, i, j] = P(y_bi ≻ y_bj | x_b)
                                                    P + Pᵀ = 1, diag(P) = ½
    stats()                -> {name: float}         counters to report (calls, NaNs, unparsed rate, ...)

``prompts`` are the records' prompts (text, or chat messages); ``lists[b]`` are the K response texts of
``prompts[b]``. Lists of unequal length are padded to the longest with NaN (scores) and NaN (preferences
touching a padded slot); the padding is not counted as NaN in ``stats()``.

A source that scores gets its preferences from its scores through one of two links:

    hard_preference:  P_ij = 1 if s_i > s_j, 0 if s_i < s_j, ½ on a tie      (a noiseless annotator)
    bradley_terry:    P_ij = σ(s_i − s_j)                                      (Bradley & Terry 1952)

and a pair touching an unscorable response (NaN score) is NaN both ways; the diagonal stays ½.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RewardContext:
    """What a source may need from the run."""

    oracle: Callable[[str, str], float] | None = None  # the synthetic task's reward(prompt, response)
    device: str = "cpu"
    cache_dir: str = "outputs/.cache"
    words: list[str] = field(default_factory=list)  # the tiny tokenizer's words (to build the tiny preset)
    seed: int = 0


def hard_preference(scores: torch.Tensor) -> torch.Tensor:
    """[B, K] scores → [B, K, K] with P_ij = ½(1 + sign(s_i − s_j)); NaN pairs stay NaN, diagonal ½."""
    diff = scores.unsqueeze(-1) - scores.unsqueeze(-2)
    return _with_half_diagonal(0.5 * (1.0 + torch.sign(diff)))


def bradley_terry(scores: torch.Tensor) -> torch.Tensor:
    """[B, K] scores → [B, K, K] with P_ij = σ(s_i − s_j); NaN pairs stay NaN, diagonal ½."""
    return _with_half_diagonal(torch.sigmoid(scores.unsqueeze(-1) - scores.unsqueeze(-2)))


def _with_half_diagonal(p: torch.Tensor) -> torch.Tensor:
    k = p.shape[-1]
    p = p.float().clone()
    p[..., torch.arange(k), torch.arange(k)] = 0.5
    return p


def pad_lists(values: Sequence[Sequence[float]]) -> torch.Tensor:
    """Ragged per-prompt values → [B, K_max] float32, NaN in the padding."""
    width = max((len(v) for v in values), default=0)
    out = torch.full((len(values), width), math.nan, dtype=torch.float32)
    for b, row in enumerate(values):
        out[b, : len(row)] = torch.tensor([math.nan if v is None else float(v) for v in row], dtype=torch.float32)
    return out


def unflatten(flat: Sequence[float | None], lists: Sequence[Sequence[Any]]) -> torch.Tensor:
    """One value per response, in list order → [B, K_max] float32 (NaN in the padding and for None)."""
    rows, start = [], 0
    for row in lists:
        rows.append(flat[start : start + len(row)])
        start += len(row)
    return pad_lists(rows)


def flatten(prompts: Sequence[Any], lists: Sequence[Sequence[str]]) -> tuple[list[Any], list[str]]:
    """Each response with its prompt, in list order."""
    return [p for p, row in zip(prompts, lists) for _ in row], [r for row in lists for r in row]


def real_mask(lists: Sequence[Sequence[Any]]) -> torch.Tensor:
    """[B, K_max] bool: True where a response exists (False in the padding of ragged lists)."""
    width = max((len(v) for v in lists), default=0)
    return torch.tensor([[k < len(row) for k in range(width)] for row in lists], dtype=torch.bool).reshape(-1, width)


def check_inputs(prompts: Sequence[Any], lists: Sequence[Sequence[str]]) -> None:
    if len(prompts) != len(lists):
        raise ValueError(f"{len(prompts)} prompts but {len(lists)} response lists")


class RewardSource:
    """Base of every reward source. Subclasses implement ``_score_flat`` (one value per (prompt, response))
    and set ``link`` (how preferences follow from scores), or override ``prefer``."""

    name: str = ""
    link: Callable[[torch.Tensor], torch.Tensor] = staticmethod(bradley_terry)

    def __init__(self) -> None:
        self.counters: dict[str, float] = {"score_calls": 0, "prefer_calls": 0, "responses": 0, "nan": 0}

    def _score_flat(self, prompts: list[Any], responses: list[str]) -> list[float]:
        """One float per (prompts[n], responses[n]); NaN (or None) where it cannot score."""
        raise NotImplementedError

    def score(self, prompts: Sequence[Any], lists: Sequence[Sequence[str]]) -> torch.Tensor:
        check_inputs(prompts, lists)
        self.counters["score_calls"] += 1
        return self._scores(prompts, lists)

    def _scores(self, prompts: Sequence[Any], lists: Sequence[Sequence[str]]) -> torch.Tensor:
        flat_prompts, responses = flatten(prompts, lists)
        flat = self._score_flat(flat_prompts, responses)
        if len(flat) != len(flat_prompts):
            raise ValueError(f"{type(self).__name__} returned {len(flat)} scores for {len(flat_prompts)} responses")
        scores = unflatten(flat, lists)
        self.counters["responses"] += len(flat)
        self.counters["nan"] += int((scores.isnan() & real_mask(lists)).sum())
        return scores

    def prefer(self, prompts: Sequence[Any], lists: Sequence[Sequence[str]]) -> torch.Tensor:
        check_inputs(prompts, lists)
        self.counters["prefer_calls"] += 1
        return self.link(self._scores(prompts, lists))

    def stats(self) -> dict[str, float]:
        """Counters to report: calls, responses scored, NaN scores returned (and source-specific ones)."""
        return {k: float(v) for k, v in self.counters.items()}
