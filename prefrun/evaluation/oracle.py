"""Oracle evaluation on held-out prompts: sample from the policy and the reference, score, compare.

Samples at temperature 1 (greedy saturates on the sort task). Reports, for each model, the mean
oracle reward, the strict metrics (exact sort rate, valid permutation rate) and the mean response
length; the win rate of policy over reference on the same prompt (ties count ½); and the sequence
KL(policy ‖ reference) estimated from the policy's own samples: mean of log π(y) − log π_ref(y).
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import fmean
from typing import Any

import torch


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int, seed: int):
    """Sample one response per prompt at T = 1; returns (texts, token id lists incl. EOS when emitted)."""
    tokenizer.padding_side = "left"
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    texts, ids = [], []
    model.eval()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            else:
                row = [t for t in row if t != tokenizer.pad_token_id]
            ids.append(row)
            texts.append(" " + tokenizer.decode(row, skip_special_tokens=True))
    torch.random.set_rng_state(generator_state)
    return texts, ids


@torch.no_grad()
def sequence_logps(model: Any, tokenizer: Any, prompts: list[str], responses: list[list[int]], batch_size: int):
    """Summed log π(response | prompt) for each pair, from one forward per batch."""
    out = []
    for i in range(0, len(prompts), batch_size):
        rows, masks = [], []
        for p, r in zip(prompts[i : i + batch_size], responses[i : i + batch_size]):
            p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
            rows.append(p_ids + r)
            masks.append([0] * len(p_ids) + [1] * len(r))
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows], device=model.device)
        att = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
        msk = torch.tensor([m + [0] * (width - len(m)) for m in masks], device=model.device)
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
        tok_logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        out.extend((tok_logps * msk[:, 1:]).sum(1).tolist())
    return out


def evaluate(
    policy: Any,
    reference: Any,
    tokenizer: Any,
    prompts: list[str],
    reward_fn: Callable[[str, str], float],
    strict_fns: dict[str, Callable[[str, str], bool]],
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """Oracle reward, strict metrics and length of each model; win rate and KL of policy vs reference."""
    results: dict[str, float] = {}
    rewards = {}
    for name, model in (("reference", reference), ("policy", policy)):
        texts, ids = sample(model, tokenizer, prompts, max_new_tokens, batch_size, seed)
        rewards[name] = [reward_fn(p, t) for p, t in zip(prompts, texts)]
        results[f"{name}/oracle_reward"] = fmean(rewards[name])
        for metric, fn in strict_fns.items():
            results[f"{name}/{metric}"] = fmean(float(fn(p, t)) for p, t in zip(prompts, texts))
        results[f"{name}/length"] = fmean(len(r) for r in ids)
        if name == "policy":
            logp_pi = sequence_logps(policy, tokenizer, prompts, ids, batch_size)
            logp_ref = sequence_logps(reference, tokenizer, prompts, ids, batch_size)
            results["kl"] = fmean(a - b for a, b in zip(logp_pi, logp_ref))
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards["policy"], rewards["reference"])]
    results["win_rate"] = fmean(wins)
    results["reward_gain"] = results["policy/oracle_reward"] - results["reference/oracle_reward"]
    return results
