"""``reward=judge``: a generative LLM judge with Auto-J's prompts and parsers (prefrun.rewards.autoj).

    prefer, protocol=pairwise:  each pair (i, j) judged by the Auto-J pairwise prompt, the verdict v read as
                                the probability that the response shown first wins: 1, 0, ½ on a tie;
                                an unparsed verdict counts as a tie (½)
    prefer, protocol=single:    each response rated on 1–10 (the single prompt); P_ij = 1, 0, ½ as the
                                ratings compare, ½ when either is unparsed
    score:                      the single protocol's rating, NaN when unparsed

Position swap (``reward.swap``) against first-position bias (Wang et al. 2023, arXiv 2305.17926;
Zheng et al. 2023, arXiv 2306.05685):

- ``fixed``: i is shown first for every i < j;
- ``random``: a seeded coin per pair picks the order (TRL's judges, AlpacaEval), then maps back;
- ``both``: each pair judged in both orders and the two mapped-back values averaged (Auto-J's evaluation).
  ``consistency`` = the fraction of pairs whose two mapped-back verdicts agree (unparsed read as tie), as
  Auto-J's leaderboard reports it: 1 − (orders disagree) / pairs.

A judge whose first-position win probability is σ(Δ + b) reports σ(b) at a true ½ under ``fixed``, and
½ under ``random`` and ``both``. ``first_position_rate`` (decisive pairwise verdicts won by the response
shown first) exposes the bias; ``unparsed_rate`` counts verdicts the parser could not read. Greedy decoding
(temperature 0) by default, as Auto-J decodes. Generation goes through prefrun.generation's sampler; the
judge model loads on first use.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from prefrun.errors import PrefrunError
from prefrun.rewards import REWARDS
from prefrun.rewards.autoj import llama2_wrapper, pairwise_prompt, parse_pairwise, parse_single, single_prompt
from prefrun.rewards.base import RewardContext, RewardSource, check_inputs, flatten
from prefrun.rewards.model_ref import resolve_model

FIRST_WINS = {"first": 1.0, "second": 0.0, "tie": 0.5, None: 0.5}  # P(response shown first wins)
PROTOCOLS = ("pairwise", "single")
SWAPS = ("fixed", "random", "both")
COUNTERS = (
    *("pairwise_judgments", "pairwise_unparsed", "single_judgments", "single_unparsed"),
    *("first_wins", "second_wins", "ties", "both_pairs", "both_agree"),
)


@REWARDS.register("judge")
class JudgeReward(RewardSource):
    name = "judge"

    def __init__(self, cfg: Any, context: RewardContext) -> None:
        super().__init__()
        self.protocol = str(cfg.get("protocol", "pairwise"))
        self.swap = str(cfg.get("swap", "both"))
        if self.protocol not in PROTOCOLS:
            raise PrefrunError(f"reward.protocol={self.protocol!r} must be one of {', '.join(PROTOCOLS)}")
        if self.swap not in SWAPS:
            raise PrefrunError(f"reward.swap={self.swap!r} must be one of {', '.join(SWAPS)}")
        self.cfg, self.context = cfg, context
        self.template = str(cfg.get("template", "chat"))
        if self.template not in ("chat", "llama2"):
            raise PrefrunError(f"reward.template={self.template!r} must be chat or llama2")
        seed = cfg.get("seed")
        self.seed = int(context.seed if seed is None else seed)
        self.rng = random.Random(self.seed)  # the order coin of swap=random
        self.ref = self._resolve(cfg, context)
        self._model: Any = None
        self._tokenizer: Any = None
        for key in COUNTERS:
            self.counters[key] = 0

    def _resolve(self, cfg: Any, context: RewardContext) -> Any:
        """The judge model to load (a test double that overrides ``_generate`` may skip it)."""
        return resolve_model(cfg, context, "judge")

    # --- generation: the one seam a test double replaces ---------------------------------------------------
    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from prefrun.models.loading import load_model_and_tokenizer

            device = self.context.device
            self._model, self._tokenizer = load_model_and_tokenizer(self.ref.path, self.ref.model_cfg, device)
            self._model.to(device).eval()
        return self._model, self._tokenizer

    def _generate(self, judge_prompts: list[str]) -> list[str]:
        """The judge's completion of each Auto-J prompt (greedy unless reward.temperature > 0)."""
        from prefrun.generation import SamplingSettings, encode_prompts, sample

        model, tokenizer = self._load()
        chat = self.template == "chat" and bool(tokenizer.chat_template)
        prompts = [[{"role": "user", "content": p}] if chat else llama2_wrapper(p) for p in judge_prompts]
        # A judge with a short context (the tiny model: 256 positions) keeps the verdict's room: the prompt's end
        # and as many new tokens as fit, never more than the settings ask for.
        context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        new_tokens = min(int(self.cfg.get("max_new_tokens", 1024)), max(1, context // 4))
        ids = encode_prompts(tokenizer, prompts, min(int(self.cfg.get("max_prompt_len", 2048)), context - new_tokens))
        settings = SamplingSettings(
            n=1,
            temperature=float(self.cfg.get("temperature", 0.0)),
            max_new_tokens=new_tokens,
            seed=self.seed,
            batch_size=int(self.cfg.get("batch_size", 16)),
        )
        return [texts[0] for texts in sample(model, tokenizer, ids, settings, stage="judge verdicts").texts]

    # --- protocols ------------------------------------------------------------------------------------------
    def _ratings(self, prompts: list[Any], responses: list[str]) -> list[float]:
        if not responses:
            return []
        outputs = self._generate([single_prompt(p, r) for p, r in zip(prompts, responses)])
        ratings = [parse_single(o) for o in outputs]
        self.counters["single_judgments"] += len(ratings)
        self.counters["single_unparsed"] += sum(r is None for r in ratings)
        return [math.nan if r is None else r for r in ratings]

    def _score_flat(self, prompts: list[Any], responses: list[str]) -> list[float]:
        return self._ratings(prompts, responses)

    def _first_wins(self, items: list[tuple[Any, str, str]]) -> list[float]:
        """P(the first shown wins) for each (prompt, first, second), one batched generation."""
        if not items:
            return []
        outputs = self._generate([pairwise_prompt(p, a, b) for p, a, b in items])
        verdicts = [parse_pairwise(o) for o in outputs]
        self.counters["pairwise_judgments"] += len(verdicts)
        self.counters["pairwise_unparsed"] += sum(v is None for v in verdicts)
        self.counters["first_wins"] += sum(v == "first" for v in verdicts)
        self.counters["second_wins"] += sum(v == "second" for v in verdicts)
        self.counters["ties"] += sum(v == "tie" for v in verdicts)
        return [FIRST_WINS[v] for v in verdicts]

    def prefer(self, prompts: Sequence[Any], lists: Sequence[Sequence[str]]) -> torch.Tensor:
        check_inputs(prompts, lists)
        self.counters["prefer_calls"] += 1
        width = max((len(row) for row in lists), default=0)
        out = torch.full((len(lists), width, width), math.nan)  # NaN stays only in the padding of ragged lists
        pairs = [(b, i, j) for b, row in enumerate(lists) for i in range(len(row)) for j in range(i + 1, len(row))]
        if self.protocol == "single":
            values = self._prefer_single(prompts, lists, pairs)
        else:
            values = self._prefer_pairwise(prompts, lists, pairs)
        for (b, i, j), p_ij in zip(pairs, values):
            out[b, i, j], out[b, j, i] = p_ij, 1.0 - p_ij
        out[:, range(width), range(width)] = 0.5
        return out

    def _prefer_single(self, prompts: Sequence[Any], lists: Sequence[Sequence[str]], pairs: list) -> list[float]:
        """P(i ≻ j) from the two ratings: 1, 0, ½ on equal ratings or when either is unparsed."""
        flat = self._ratings(*flatten(prompts, lists))
        offsets = [0]
        for row in lists:
            offsets.append(offsets[-1] + len(row))
        out = []
        for b, i, j in pairs:
            ri, rj = flat[offsets[b] + i], flat[offsets[b] + j]
            out.append(0.5 if math.isnan(ri) or math.isnan(rj) else 0.5 * (1 + (ri > rj) - (ri < rj)))
        return out

    def _prefer_pairwise(self, prompts: Sequence[Any], lists: Sequence[Sequence[str]], pairs: list) -> list[float]:
        """P(i ≻ j) for each pair (b, i, j), i < j, from verdicts in the order(s) of ``reward.swap``."""
        flipped = [self.swap == "random" and self.rng.random() < 0.5 for _ in pairs]
        shown = [(j, i) if f else (i, j) for (_, i, j), f in zip(pairs, flipped)]
        items = [(prompts[b], lists[b][x], lists[b][y]) for (b, _, _), (x, y) in zip(pairs, shown)]
        if self.swap == "both":
            items += [(p, second, first) for p, first, second in items]
        wins = self._first_wins(items)
        out = []
        for n, f in enumerate(flipped):
            p_ij = 1.0 - wins[n] if f else wins[n]  # mapped back to "i beats j"
            if self.swap == "both":
                p_ij_swapped = 1.0 - wins[n + len(pairs)]  # j was shown first
                self.counters["both_pairs"] += 1
                self.counters["both_agree"] += int(p_ij == p_ij_swapped)
                p_ij = 0.5 * (p_ij + p_ij_swapped)
            out.append(p_ij)
        return out

    def stats(self) -> dict[str, float]:
        """Counters plus: unparsed_rate (all verdicts), consistency (swap=both), first_position_rate."""
        out = super().stats()
        judgments = out["pairwise_judgments"] + out["single_judgments"]
        out["judgments"] = judgments
        out["unparsed_rate"] = (out["pairwise_unparsed"] + out["single_unparsed"]) / judgments if judgments else 0.0
        decisive = out["first_wins"] + out["second_wins"]
        out["first_position_rate"] = out["first_wins"] / decisive if decisive else 0.5
        if out["both_pairs"]:
            out["consistency"] = out["both_agree"] / out["both_pairs"]
        return out
