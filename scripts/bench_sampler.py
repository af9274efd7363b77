#!/usr/bin/env python
"""Bench row 5, the sampler: samples/s of prefrun.generation.sample against the plain way, side by side.

    python scripts/bench_sampler.py                 # this row alone, full sizes, 3 repeats
    python scripts/bench_sampler.py --quick         # smoke-test sizes
    python scripts/bench_sampler.py --prompts 4,16  # prompts per generate call to compare (default 16)
    python scripts/bench.py --rows sampler          # the same row inside make bench

The plain way is what TRL's online trainers do: each prompt repeated K times in one ``generate`` call, then
the completions cut at EOS and decoded. The sampler prefills each prompt once and shares its KV cache with
its K samples, decodes into a cache with room reserved (no per-step copy of the K-fold cache), and it also
returns log-probs (from generate's logits) and texts. ``prefill_only_ratio`` is the sampler without the
reserved room: what prefilling once gives alone. Prompt 128 tokens, K = 8,
32 new tokens at temperature 1 (top-k and top-p off), on bench.py's model (random init: almost no sample
stops early, so both sides do the same work). Each repeat times both, in alternating order, in this process
with the same seed; medians over repeats. It also reports how many samples the two gave equal (the same
random draws on the same logits up to ~1e-7), and the prefill's share of the plain way's time (one forward
over the B·K prompt rows), which bounds what prefilling once can save.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench.py, when run as a script from anywhere

from bench import FULL, QUICK, Sizes, entry, load_model, load_tokenizer, median, model_dir, quiet, text_records  # noqa: E402, I001

PROMPT_LEN, K, NEW_TOKENS, PROMPTS = 128, 8, 32, 16
QUICK_SIZES = {"prompt_len": 16, "k": 4, "new_tokens": 6, "prompts": 4}


def plain_generate(model: Any, tokenizer: Any, prompt_ids: list[list[int]], k: int, new_tokens: int, seed: int):
    """The baseline: the prompts left-padded, each repeated k times, one ``generate`` call, cut at EOS, decoded."""
    import torch

    pad = tokenizer.pad_token_id
    width = max(map(len, prompt_ids))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids]).repeat_interleave(k, 0)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids]).repeat_interleave(k, 0)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
    torch.random.set_rng_state(state)
    rows = []
    for row in out[:, width:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        rows.append(row)
    tokenizer.batch_decode(rows, skip_special_tokens=True)
    return [rows[b * k : (b + 1) * k] for b in range(len(prompt_ids))]


def prefill_seconds(model: Any, prompt_ids: list[list[int]], k: int) -> float:
    """One forward over the prompts repeated k times: the part of the plain way that prefilling once divides by k."""
    import torch

    ids = torch.tensor(prompt_ids).repeat_interleave(k, 0)
    start = time.perf_counter()
    with torch.no_grad():
        model(input_ids=ids, logits_to_keep=1)
    return time.perf_counter() - start


def unreserved() -> Any:
    """A context in which the sampler prefills once but decodes with a plain ``DynamicCache`` (no reserved room):
    the share of the gain that prefilling once gives on its own."""
    from unittest import mock

    return mock.patch("prefrun.generation.prefill.DynamicLayer", type("NoLayer", (), {}))


def run(name: str, model: Any, tokenizer: Any, prompt_ids: list[list[int]], settings: Any, seed: int) -> list:
    """[B][K] sample ids of one side: ``sampler``, ``prefill_only`` or ``plain``."""
    from prefrun.generation import sample

    if name == "plain":
        return plain_generate(model, tokenizer, prompt_ids, settings.n, settings.max_new_tokens, seed)
    settings = dataclasses.replace(settings, seed=seed)
    if name == "prefill_only":
        with unreserved():
            return sample(model, tokenizer, prompt_ids, settings).token_ids
    return sample(model, tokenizer, prompt_ids, settings).token_ids


def row_sampler(s: Sizes, repeats: int, quick: bool, prompts_per_call: tuple[int, ...] = (PROMPTS,)) -> list[dict]:
    """Samples/s of the sampler and of the plain way for each prompt batch size; bench.py's row format."""
    from prefrun.generation import SamplingSettings, encode_prompts

    sz = QUICK_SIZES if quick else {"prompt_len": PROMPT_LEN, "k": K, "new_tokens": NEW_TOKENS, "prompts": PROMPTS}
    path = model_dir(s)
    model, tokenizer = load_model(path).eval(), load_tokenizer(path)
    rows = []
    for b in prompts_per_call if not quick else (sz["prompts"],):
        records = text_records(b, 2, sz["prompt_len"], 2, s.words, seed=5)  # (responses unused)
        prompt_ids = encode_prompts(tokenizer, [r["prompt"] for r in records], 4096)
        assert all(len(p) == sz["prompt_len"] for p in prompt_ids), "each prompt word is one token"
        settings = SamplingSettings(
            n=sz["k"], top_k=0, max_new_tokens=sz["new_tokens"], batch_size=b, backend="hf", seed=0
        )

        names = ("sampler", "prefill_only", "plain")
        times: dict[str, list[float]] = {name: [] for name in names}
        shares: list[float] = []
        equal = total = 0
        for name in names:  # warm-up
            run(name, model, tokenizer, prompt_ids[:2], settings, 0)
        for r in range(repeats):
            got: dict[str, Any] = {}
            for name in names if r % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                got[name] = run(name, model, tokenizer, prompt_ids, settings, r)
                times[name].append(time.perf_counter() - start)
            pairs = [(x, y) for gx, gy in zip(got["sampler"], got["plain"]) for x, y in zip(gx, gy)]
            equal += sum(x == y for x, y in pairs)
            total += len(pairs)
            shares.append(prefill_seconds(model, prompt_ids, sz["k"]) / times["plain"][-1])
        n = b * sz["k"]
        sps = {name: n / median(v) for name, v in times.items()}
        label = f"5 sampler P={sz['prompt_len']} K={sz['k']} L={sz['new_tokens']} B={b}"
        rows.append(
            entry(
                label,
                "samples/s",
                sps["sampler"],
                sps["plain"],
                sps["sampler"] / sps["plain"],
                ">= 1.5",
                seconds={name: median(v) for name, v in times.items()},
                prefill_only_ratio=sps["prefill_only"] / sps["plain"],
                equal_samples=f"{equal}/{total}",
                equal_rate=equal / total,
                plain_prefill_share=median(shares),
                prompts_per_call=b,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--prompts", default=str(PROMPTS), help="comma-separated prompts per generate call")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    quiet()
    sizes = QUICK if args.quick else FULL
    model_dir(sizes)
    batches = tuple(int(x) for x in args.prompts.split(","))
    rows = row_sampler(sizes, args.repeats or (1 if args.quick else 3), args.quick, batches)
    for r in rows:
        print(
            f"{r['row']:<40} sampler {r['prefrun']:8.1f} samples/s  plain {r['baseline']:8.1f}  "
            f"ratio {r['ratio']:.2f}x (target {r['target']}; prefill once alone {r['prefill_only_ratio']:.2f}x)  "
            f"equal samples {r['equal_samples']}  prefill share of plain {r['plain_prefill_share']:.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
