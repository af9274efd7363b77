"""``decode=dbs``: diverse beam search (Vijayakumar et al. 2018, "Diverse Beam Search", arXiv 1610.02424).

B = ``beams`` beams split into G = ``groups`` groups of B' = B / G. At each step the groups extend in order
g = 1 … G; group g runs one step of beam search over its B' beams with the step objective

    s(y_b ⊕ v) = s(y_b) + log p(v | x, y_b) − λ · count_{<g}(v)      (Hamming diversity, the paper's Eq. 5)

count_{<g}(v) the number of times token v was chosen at this step by the groups before g (their live beams),
λ = ``diversity``. Each group keeps its B' best extensions (s is cumulative: past penalties stay in it, as in
the paper and the reference implementations). A beam that ends (EOS) is frozen: its one extension is a
padding token at no cost, so it keeps competing with its score; the search stops when every beam has ended
or after max_new_tokens. Beams are ranked at the end by their unaugmented log-probability
log π(y | x) = Σ_t log p(y_t | x, y_<t) (the paper stores it for this), no length normalisation.

Like transformers' port (HammingDiversityLogitsProcessor) and unlike the authors' Lua code
(``ashwinkalyan/dbs``), groups are not staggered in time. λ = 0 or G = 1 is plain beam search with B' beams
in every group. Implemented here step by step on the model's forward (no KV cache: the full sequences are
rerun each step, which the forward counts in the report show), never through ``generate``'s removed
``num_beam_groups``/``diversity_penalty`` (group beam search left transformers' core in 5.x and now needs
remote code from the Hub).

The answer is the beam with the highest log π, or with ``rerank=true`` the beam the reward source scores
highest (one batched call; DBS + rerank, the paper's use of diverse lists). The report adds ``unique``
(distinct answers among a prompt's B beams), ``hamming`` (mean over pairs of beams of the fraction of token
positions that differ) and ``beam_logp`` (mean log π of all beams).

Settings (conf/decode/dbs.yaml): beams, groups, diversity, rerank, reward (for rerank; null = the run's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from prefrun.decoding import DECODERS
from prefrun.decoding.base import Costs, Decoded, positive_int
from prefrun.decoding.bon import best_index, pick
from prefrun.errors import PrefrunError

NEG = -1e9  # a score that never wins (finite, so sums stay finite)


def group_step(
    scores: torch.Tensor, logp: torch.Tensor, counts: torch.Tensor, diversity: float, live: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One group's step for P prompts: the B' best (source beam, token) of s + log p − λ·count.

    ``scores`` [P, B'] cumulative scores, ``logp`` [P, B', V] next-token log-probs, ``counts`` [P, V] tokens
    the earlier groups chose at this step, ``live`` [P, B'] beams not yet ended (only they are penalised).
    Returns (new scores [P, B'], source beam [P, B'], token [P, B']).
    """
    width, vocab = logp.shape[1], logp.shape[2]
    penalty = diversity * counts[:, None, :] * live[:, :, None]
    candidates = (scores[:, :, None] + logp - penalty).reshape(len(scores), width * vocab)
    top, flat = candidates.topk(width, dim=1)
    return top, flat // vocab, flat % vocab


@torch.no_grad()
def diverse_beams(
    model: Any,
    prompt_ids: list[list[int]],
    *,
    beams: int,
    groups: int,
    diversity: float,
    max_new_tokens: int,
    eos_ids: list[int],
    pad: int,
    batch_size: int = 16,
) -> tuple[list[list[list[int]]], list[list[torch.Tensor]]]:
    """[B][beams] raw token ids and [B][beams] per-token log-probs of each prompt's diverse beams, best first."""
    if beams % groups:
        raise PrefrunError(f"decode.beams={beams} does not split into decode.groups={groups}; make beams a multiple")
    device = next(model.parameters()).device
    width = beams // groups
    eos = torch.tensor(eos_ids, device=device)
    rows_out: list[list[list[int]]] = []
    steps_out: list[list[torch.Tensor]] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        n, length = len(chunk), max(map(len, chunk))
        ids = torch.tensor([[pad] * (length - len(p)) + p for p in chunk], device=device).repeat_interleave(beams, 0)
        mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in chunk], device=device)
        mask = mask.repeat_interleave(beams, 0)
        scores = torch.full((n, groups, width), NEG, device=device)
        scores[:, :, 0] = 0.0  # each group starts from one beam, so its first step picks distinct tokens
        token_logps = torch.zeros(n * beams, 0, device=device)
        ended = torch.zeros(n, groups, width, dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
            logp = torch.log_softmax(logits, -1).reshape(n, groups, width, -1)
            frozen = torch.full_like(logp, NEG)
            frozen[..., pad] = 0.0  # an ended beam's only extension: padding, at no cost
            logp = torch.where(ended[..., None], frozen, logp)
            counts = torch.zeros(n, logp.shape[-1], device=device)
            order = torch.empty(n, groups, width, dtype=torch.long, device=device)
            chosen = torch.empty(n, groups, width, dtype=torch.long, device=device)
            for g in range(groups):
                top, source, token = group_step(scores[:, g], logp[:, g], counts, diversity, ~ended[:, g])
                live = ~ended[:, g].gather(1, source)
                counts.scatter_add_(1, token, live.float())
                scores[:, g], order[:, g], chosen[:, g] = top, source, token
            rows = (torch.arange(n, device=device)[:, None, None] * beams + torch.arange(groups, device=device)[
                None, :, None
            ] * width + order).reshape(-1)  # fmt: skip
            step_logp = logp.reshape(n * beams, -1)[rows, chosen.reshape(-1)]
            was_ended = ended.reshape(-1)[rows].reshape(n, groups, width)
            ended = was_ended | torch.isin(chosen, eos)
            ids = torch.cat([ids[rows], chosen.reshape(-1, 1)], 1)
            mask = torch.cat([mask[rows], torch.ones_like(mask[:, :1])], 1)
            token_logps = torch.cat([token_logps[rows], torch.where(was_ended.reshape(-1), 0.0, step_logp)[:, None]], 1)
            if ended.all():
                break
        new = ids[:, length:].reshape(n, beams, -1).tolist()
        per_token = token_logps.reshape(n, beams, -1).cpu()
        ranking = per_token.sum(-1).argsort(dim=1, descending=True, stable=True)
        for b in range(n):
            rows_out.append([new[b][k] for k in ranking[b].tolist()])
            steps_out.append([per_token[b, k] for k in ranking[b].tolist()])
    return rows_out, steps_out


def mean_hamming(beams: list[list[int]]) -> float:
    """Mean over pairs of beams of the fraction of positions where their tokens differ (the shorter padded)."""
    pairs = [(a, b) for i, a in enumerate(beams) for b in beams[:i]]
    if not pairs:
        return 0.0
    total = 0.0
    for a, b in pairs:
        width = max(len(a), len(b), 1)
        total += sum(x != y for x, y in zip(a + [-1] * (width - len(a)), b + [-1] * (width - len(b)))) / width
    return total / len(pairs)


@DECODERS.register("dbs")
class DiverseBeamSearch:
    name = "dbs"

    def __init__(self, cfg: Any, reward: Callable[[], Any] | None = None) -> None:
        self.beams = positive_int(cfg, "beams", "beams in all", "8")
        self.groups = positive_int(cfg, "groups", "beam groups", "8")
        if self.beams % self.groups:
            raise PrefrunError(
                f"decode.beams={self.beams} does not split into decode.groups={self.groups}; make beams a multiple"
            )
        diversity = cfg.get("diversity", 0.5)
        if isinstance(diversity, bool) or not isinstance(diversity, int | float) or diversity < 0:
            raise PrefrunError(f"decode.diversity={diversity!r}: must be a number ≥ 0 (λ, 0 = plain beam search)")
        self.diversity = float(diversity)
        self.rerank = bool(cfg.get("rerank", False))
        self.needs_reward = self.rerank
        if self.rerank and reward is None:
            raise PrefrunError(
                "decode=dbs with decode.rerank=true ranks beams by a reward source and has none: set reward=<source>"
            )
        self._reward = reward

    def decode(
        self, model: Any, tokenizer: Any, prompts: list[Any], prompt_ids: list[list[int]], settings: Any
    ) -> Decoded:
        from prefrun.generation.sampler import _eos_ids, _finish

        eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        was_training = model.training
        model.eval()
        try:
            with Costs(model) as costs:
                rows, steps = diverse_beams(
                    model,
                    prompt_ids,
                    beams=self.beams,
                    groups=self.groups,
                    diversity=self.diversity,
                    max_new_tokens=settings.max_new_tokens,
                    eos_ids=eos_ids,
                    pad=pad,
                    batch_size=settings.batch_size,
                )
                every = _finish(
                    tokenizer, prompt_ids, rows, steps, dataclasses.replace(settings, n=self.beams), eos_ids
                )
                index = torch.zeros(len(prompts), dtype=torch.long)  # beams come best log π first
                if self.rerank:
                    scores = self._reward().score(prompts, every.texts)
                    costs.reward_calls += 1
                    costs.reward_responses += scores.numel()
                    index = best_index(scores)
        finally:
            model.train(was_training)
        report = {
            **costs.per_response(len(prompts)),
            "unique": sum(len(set(map(tuple, row))) for row in every.token_ids) / len(prompts),
            "beam_logp": float(every.logps.mean()),
            "hamming": sum(map(mean_hamming, every.token_ids)) / len(prompts),
        }
        return Decoded(samples=pick(every, index), report=report, beams=every)
