#!/usr/bin/env python
"""make bench: prefrun against what its users would run instead, side by side on CPU.

    python scripts/bench.py                    # full sizes, 3 repeats; writes outputs/bench/bench.json
    python scripts/bench.py --quick            # tiny sizes: a smoke test of the script itself
    python scripts/bench.py --rows shared --repeats 5

Rows (one function each; ratios are prefrun over its baseline, oriented so the target reads ≥ or ≤):
  1. pairwise   prefrun ListTrainer objective=dpo vs TRL DPOTrainer, same model, data, batch, lengths,
                fp32: training tokens/s, and peak RSS of each in its own child process.
  2. listwise   K = 8: prefrun lipo (one pass over B·K sequences) vs TRL DPOTrainer over all 28 pairs
                per prompt, and over the 7 best-vs-rest pairs: prompts/s over one epoch of the same prompts.
  3. sweep      4 β values on the same data: total wall time (model load, reference log-probs, training)
                with prefrun's ReferenceCache vs TRL's precompute_ref_log_probs recomputed by every run.
  4. shared     prompt 256 tokens, K = 8 responses of 32 tokens: prefrun with the prompt packed once
                (prefrun.data.shared_prompt) vs its unshared rows: tokens through the model, step time.
  5. sampler    prompt 128 tokens, K = 8, 32 new tokens: prefrun.generation vs the prompt repeated K times in
                one generate call: samples/s, and equal samples for equal seeds (scripts/bench_sampler.py).
  6. rm_pairs   bt reward model, 64-token prompts: prefrun (prompt packed once) vs TRL RewardTrainer: tokens/s,
                peak RSS (scripts/bench_reward_model.py).
  7. rm_lists   pl_rm on K = 8 lists vs RewardTrainer on all 28 pairs per list: prompts/s per epoch.
  8. diffusion  Diffusion-DPO on the tiny UNet: prefrun's DiffusionTrainer vs the diffusers research example's
                loop: images/s, peak RSS (scripts/bench_diffusion.py).
  9. mapo       MaPO's step time and peak RSS against Diffusion-DPO's (part of the diffusion row).

The model is a random-init Llama larger than `tiny` (6 layers, hidden 256, a 2k-word vocabulary), the
data synthetic with a fixed seed. Within each repeat, prefrun and its baseline run one after the other
in the same process; medians over repeats are reported. Timings are of whole optimizer steps (data,
forward, backward, AdamW), warm-up steps excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench"


@dataclass(frozen=True)
class Sizes:
    hidden: int = 256
    intermediate: int = 1024
    layers: int = 6
    heads: int = 4
    words: int = 2000  # vocabulary: these words as single tokens, plus bytes and specials
    warmup: int = 2  # optimizer steps not timed
    timed: int = 8  # optimizer steps timed (row 1)
    # 1. pairwise
    pair_prompt_len: int = 64
    pair_response_len: int = 64  # tokens, EOS included
    pair_batch: int = 8  # pairs per step
    # 2. listwise
    list_k: int = 8
    list_prompts: int = 8
    list_batch: int = 2  # prompts per step (B·K sequences); TRL gets B·K/2 pairs per step
    list_prompt_len: int = 32
    list_response_len: int = 32
    # 3. sweep
    sweep_betas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)
    sweep_pairs: int = 64
    sweep_steps: int = 2  # steps per run: a quarter of the data, as in a sweep over a larger set
    sweep_batch: int = 8
    # 4. shared prompt
    shared_prompt_len: int = 256
    shared_k: int = 8
    shared_response_len: int = 32
    shared_batch: int = 1  # prompts per step
    shared_steps: int = 4  # timed steps per mode and repeat


FULL = Sizes()
QUICK = replace(
    FULL,
    hidden=32,
    intermediate=64,
    layers=2,
    heads=2,
    words=100,
    warmup=1,
    timed=2,
    pair_prompt_len=8,
    pair_response_len=6,
    pair_batch=4,
    list_k=4,
    list_prompts=4,
    list_prompt_len=8,
    list_response_len=6,
    sweep_pairs=16,
    sweep_steps=1,
    sweep_batch=4,
    shared_prompt_len=32,
    shared_k=4,
    shared_response_len=8,
    shared_steps=2,
)
ROWS = ("pairwise", "listwise", "sweep", "shared", "sampler", "rm_pairs", "rm_lists", "diffusion")


# --- setup ----------------------------------------------------------------------------------------
def quiet() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import datasets
    import transformers

    datasets.disable_caching()  # TRL's precompute cache keys on fingerprints: fresh data, fresh pass
    datasets.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def model_dir(s: Sizes) -> Path:
    from prefrun.models.tiny import tiny_model_dir

    cfg = {
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_layers": s.layers,
        "num_heads": s.heads,
        "max_position_embeddings": 512,
        "init_seed": 0,
    }
    return tiny_model_dir(cfg, [str(i) for i in range(s.words)], ROOT / "outputs" / ".cache" / "bench")


def load_model(path: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def text_records(n: int, k: int, prompt_len: int, response_len: int, words: int, seed: int) -> list[dict]:
    """n prompts of ``prompt_len`` tokens, k responses of ``response_len`` tokens (EOS included) each,
    with distinct scores in [0, 1]."""
    rng = random.Random(seed)

    def text(length: int) -> str:
        return " ".join(str(rng.randrange(words)) for _ in range(length))

    out = []
    for _ in range(n):
        scores = [i / (k - 1) for i in range(k)]
        rng.shuffle(scores)
        out.append(
            {
                "prompt": text(prompt_len),
                "responses": [" " + text(response_len - 1) for _ in range(k)],
                "scores": scores,
            }
        )
    return out


def trl_pairs(records: list[dict], mode: str) -> list[dict]:
    """prompt/chosen/rejected rows: ``all`` pairs of a list, or ``best`` vs each of the rest."""
    rows = []
    for r in records:
        order = sorted(range(len(r["scores"])), key=lambda i: -r["scores"][i])
        pairs = (
            [(order[0], j) for j in order[1:]]
            if mode == "best"
            else [(a, b) for n, a in enumerate(order) for b in order[n + 1 :]]
        )
        rows += [{"prompt": r["prompt"], "chosen": r["responses"][a], "rejected": r["responses"][b]} for a, b in pairs]
    return rows


def prefrun_dataset(records: list[dict], tokenizer: Any) -> Any:
    from datasets import Dataset

    from prefrun.data.tokenize import tokenize_record

    return Dataset.from_list([{**tokenize_record(r, tokenizer, 4096, 4096), "scores": r["scores"]} for r in records])


def dpo_args(out: str, batch: int, steps: int, beta: float = 0.1, device: str = "cpu", **settings: Any) -> Any:
    """The runs' own DPOConfig builder, for both sides (TRL reads ``beta``; prefrun's objective has its own).

    ``settings``: further TrainSettings fields (``mixed_precision="bf16"`` on a GPU, scripts/gpu_check.py)."""
    from prefrun.trainers.settings import TrainSettings, dpo_config

    settings = TrainSettings(steps=steps, batch_size=batch, lr=1e-6, logging_steps=10_000, **settings)
    return dpo_config(settings, out, device, num_train_epochs=1, report_to=[], beta=beta)


def prefrun_trainer(
    path: Path,
    records: list[dict],
    objective: str,
    batch: int,
    steps: int,
    out: str,
    beta: float = 0.1,
    ref_cache: Any = None,
    model: Any = None,
    args: Any = None,
    shared_prompt: str = "auto",
) -> Any:
    """``model`` / ``args`` (optional) replace the fp32 CPU model loaded from ``path`` and the CPU DPOConfig."""
    from prefrun.data.shared_prompt import use_shared_prompt
    from prefrun.objectives import get_objective
    from prefrun.trainers.list_trainer import ListTrainer

    tokenizer = load_tokenizer(path)
    dataset = prefrun_dataset(records, tokenizer)
    trainer = ListTrainer(
        model=model if model is not None else load_model(path),
        objective=get_objective(objective, beta=beta),
        args=args if args is not None else dpo_args(out, batch, steps),
        train_dataset=dataset,
        processing_class=tokenizer,
        ref_cache=ref_cache,
        shared_prompt=use_shared_prompt(shared_prompt, dataset),  # "auto": what a prefrun run does by default
    )
    return silent(trainer)


def trl_trainer(
    path: Path,
    pairs: list[dict],
    batch: int,
    steps: int,
    out: str,
    beta: float = 0.1,
    model: Any = None,
    args: Any = None,
) -> Any:
    """``model`` / ``args`` (optional) replace the fp32 CPU model loaded from ``path`` and the CPU DPOConfig."""
    from datasets import Dataset
    from trl import DPOTrainer

    trainer = DPOTrainer(
        model=model if model is not None else load_model(path),
        args=args if args is not None else dpo_args(out, batch, steps, beta=beta),
        train_dataset=Dataset.from_list(pairs),
        processing_class=load_tokenizer(path),
    )
    return silent(trainer)


def silent(trainer: Any) -> Any:
    """No end-of-training log print (the same for both sides)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def timed_train(trainer: Any, warmup: int) -> dict[str, float]:
    """trainer.train() with a clock at every step end: tokens/s and step time after ``warmup`` steps,
    and the wall time of the training loop (train begin → end)."""
    from transformers import TrainerCallback

    marks: list[tuple[float, int]] = []
    span: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            span.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            marks.append((time.perf_counter(), trainer._total_train_tokens))

        def on_train_end(self, *a, **k):
            span.append(time.perf_counter())

    clock = Clock()
    trainer.add_callback(clock)
    trainer._total_train_tokens = 0
    try:
        trainer.train()
    finally:
        trainer.remove_callback(clock)
    out = {"train_s": span[1] - span[0], "steps": len(marks)}
    if len(marks) > warmup:
        (t0, n0), (t1, n1) = marks[warmup - 1] if warmup else (span[0], 0), marks[-1]
        out.update(step_s=(t1 - t0) / (len(marks) - warmup), tokens_per_s=(n1 - n0) / (t1 - t0))
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def entry(row: str, metric: str, prefrun: float, baseline: float, ratio: float, target: str, **extra) -> dict:
    op, bound = target.split()
    ok = ratio >= float(bound) if op == ">=" else ratio <= float(bound)
    return {
        "row": row,
        "metric": metric,
        "prefrun": prefrun,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "ok": ok,
        **extra,
    }


# --- row 1: pairwise --------------------------------------------------------------------------------
def pairwise_records(s: Sizes) -> list[dict]:
    n = s.pair_batch * (s.warmup + s.timed)
    return trl_pairs(text_records(n, 2, s.pair_prompt_len, s.pair_response_len, s.words, seed=1), "best")


def pairwise_train(s: Sizes, which: str, steps: int, tmp: str) -> Any:
    pairs = pairwise_records(s)
    path = model_dir(s)
    if which == "prefrun":
        return prefrun_trainer(path, as_pairs_from_trl(pairs), "dpo", s.pair_batch, steps, tmp)
    return trl_trainer(path, pairs, s.pair_batch, steps, tmp)


def as_pairs_from_trl(pairs: list[dict]) -> list[dict]:
    return [{"prompt": p["prompt"], "responses": [p["chosen"], p["rejected"]], "scores": [1.0, 0.0]} for p in pairs]


def peak_rss_child(which: str, quick: bool) -> dict[str, float]:
    """Run ``which`` (prefrun | trl) pairwise training in a fresh interpreter; its peak RSS in MiB."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which] + (["--quick"] if quick else [])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        raise RuntimeError(f"memory child {which} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(which: str, s: Sizes) -> None:
    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pairwise_train(s, which, s.warmup + 1, tmp)
        before = rss_now_mib()
        trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_rss_mib": peak, "rss_before_train_mib": before}))


def rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def row_pairwise(s: Sizes, repeats: int, quick: bool) -> list[dict]:
    runs: dict[str, list[dict]] = {"prefrun": [], "trl": []}
    mem: dict[str, list[dict]] = {"prefrun": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {w: pairwise_train(s, w, s.warmup + s.timed, f"{tmp}/{w}") for w in ("trl", "prefrun")}
        for r in range(repeats):
            order = ("trl", "prefrun") if r % 2 == 0 else ("prefrun", "trl")
            for which in order:
                runs[which].append(timed_train(trainers[which], s.warmup))
    for r in range(repeats):
        for which in ("trl", "prefrun") if r % 2 == 0 else ("prefrun", "trl"):
            mem[which].append(peak_rss_child(which, quick))
    tps = {w: median([x["tokens_per_s"] for x in runs[w]]) for w in runs}
    peak = {w: median([x["peak_rss_mib"] for x in mem[w]]) for w in mem}
    grow = {w: median([x["peak_rss_mib"] - x["rss_before_train_mib"] for x in mem[w]]) for w in mem}
    return [
        entry(
            "1 pairwise dpo",
            "train tokens/s",
            tps["prefrun"],
            tps["trl"],
            tps["prefrun"] / tps["trl"],
            ">= 1.0",
            step_s={w: median([x["step_s"] for x in runs[w]]) for w in runs},
        ),
        entry(
            "1 pairwise dpo",
            "peak RSS MiB",
            peak["prefrun"],
            peak["trl"],
            peak["prefrun"] / peak["trl"],
            "<= 1.0",
            growth_during_train_mib=grow,
        ),
    ]


# --- row 2: listwise K = 8 --------------------------------------------------------------------------
def row_listwise(s: Sizes, repeats: int) -> list[dict]:
    records = text_records(s.list_prompts, s.list_k, s.list_prompt_len, s.list_response_len, s.words, seed=2)
    path = model_dir(s)
    pair_batch = s.list_batch * s.list_k // 2  # the same sequences per step as prefrun's B·K
    wall: dict[str, list[float]] = {"prefrun": [], "all": [], "best": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            "prefrun": prefrun_trainer(path, records, "lipo", s.list_batch, -1, f"{tmp}/p", beta=0.05),
            "all": trl_trainer(path, trl_pairs(records, "all"), pair_batch, -1, f"{tmp}/a"),
            "best": trl_trainer(path, trl_pairs(records, "best"), pair_batch, -1, f"{tmp}/b"),
        }
        for t in trainers.values():  # warm-up: a couple of steps each
            t.args.max_steps = s.warmup
            t.train()
            t.args.max_steps = -1  # then whole epochs
        for r in range(repeats):
            names = list(trainers) if r % 2 == 0 else list(reversed(trainers))
            for name in names:
                wall[name].append(timed_train(trainers[name], 0)["train_s"])
    pps = {name: s.list_prompts / median(w) for name, w in wall.items()}
    counts = {
        "prompts": s.list_prompts,
        "pairs_all": len(trl_pairs(records, "all")),
        "pairs_best": len(trl_pairs(records, "best")),
    }
    return [
        entry(
            f"2 listwise K={s.list_k}",
            "prompts/s vs all pairs",
            pps["prefrun"],
            pps["all"],
            pps["prefrun"] / pps["all"],
            ">= 5.0",
            **counts,
        ),
        entry(
            f"2 listwise K={s.list_k}",
            "prompts/s vs best-vs-rest",
            pps["prefrun"],
            pps["best"],
            pps["prefrun"] / pps["best"],
            ">= 1.5",
        ),
    ]


# --- row 3: sweep of 4 β ----------------------------------------------------------------------------
def sweep_prefrun(s: Sizes, path: Path, records: list[dict], tmp: str) -> tuple[float, int]:
    from prefrun.trainers.ref_cache import ReferenceCache, model_fingerprint, tokenizer_fingerprint

    start = time.perf_counter()
    cache = ReferenceCache(
        f"{tmp}/ref-cache",
        model_fingerprint(str(path)),
        tokenizer_fingerprint(load_tokenizer(path)),
        "torch.float32",
    )
    reference_forwards = 0
    for i, beta in enumerate(s.sweep_betas):
        t = prefrun_trainer(
            path, records, "dpo", s.sweep_batch, s.sweep_steps, f"{tmp}/p{i}", beta=beta, ref_cache=cache
        )
        t.train()  # (prefrun_trainer is already silent)
        reference_forwards += t.reference_forwards
    return time.perf_counter() - start, reference_forwards


def sweep_trl(s: Sizes, path: Path, pairs: list[dict], tmp: str) -> tuple[float, int]:
    from datasets import Dataset
    from trl import DPOTrainer

    class CountingDPOTrainer(DPOTrainer):
        reference_batches = 0

        def compute_ref_log_probs(self, *a, **k):
            CountingDPOTrainer.reference_batches += 1
            return super().compute_ref_log_probs(*a, **k)

    start = time.perf_counter()
    for i, beta in enumerate(s.sweep_betas):
        t = CountingDPOTrainer(
            model=load_model(path),
            args=dpo_args(f"{tmp}/t{i}", s.sweep_batch, s.sweep_steps, beta),
            train_dataset=Dataset.from_list(pairs),
            processing_class=load_tokenizer(path),
        )
        silent(t).train()
    return time.perf_counter() - start, CountingDPOTrainer.reference_batches


def row_sweep(s: Sizes, repeats: int) -> list[dict]:
    pairs = trl_pairs(text_records(s.sweep_pairs, 2, s.pair_prompt_len, s.pair_response_len, s.words, 3), "best")
    records = as_pairs_from_trl(pairs)
    path = model_dir(s)
    wall: dict[str, list[float]] = {"prefrun": [], "trl": []}
    forwards: dict[str, int] = {}
    for r in range(repeats):
        for name in ("trl", "prefrun") if r % 2 == 0 else ("prefrun", "trl"):
            with tempfile.TemporaryDirectory() as tmp:  # a fresh reference cache for every prefrun sweep
                fn = sweep_prefrun if name == "prefrun" else sweep_trl
                seconds, forwards[name] = fn(s, path, records if name == "prefrun" else pairs, tmp)
            wall[name].append(seconds)
    w = {name: median(v) for name, v in wall.items()}
    return [
        entry(
            f"3 sweep of {len(s.sweep_betas)} beta",
            "total wall s",
            w["prefrun"],
            w["trl"],
            w["trl"] / w["prefrun"],
            ">= 1.5",
            reference_batches_last_repeat=forwards,
            pairs=len(pairs),
            steps_per_run=s.sweep_steps,
            batch=s.sweep_batch,
        )
    ]


# --- row 4: shared prompt -----------------------------------------------------------------------------
def row_shared(s: Sizes, repeats: int) -> list[dict]:
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from prefrun.data.collator import ListCollator, to_lists
    from prefrun.data.shared_prompt import SharedPromptCollator
    from prefrun.lm.logprobs import response_logps
    from prefrun.objectives import get_objective

    path = model_dir(s)
    tokenizer = load_tokenizer(path)
    records = text_records(s.shared_batch, s.shared_k, s.shared_prompt_len, s.shared_response_len, s.words, 4)
    rows = list(prefrun_dataset(records, tokenizer))
    batches = {
        "unshared": ListCollator(tokenizer.pad_token_id)(rows),
        "shared": SharedPromptCollator(tokenizer.pad_token_id)(rows),
    }
    tokens = {
        "unshared": int(batches["unshared"]["attention_mask"].sum()),
        "shared": int(batches["shared"]["padding_mask"].sum()),
    }
    model = load_model(path)
    add_fused_lm_head(model)  # as ListTrainer (TRL's DPOTrainer) does
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    objective = get_objective("lipo", beta=0.05)

    def logps(name: str, batch: dict) -> tuple[Any, Any]:
        return response_logps(model, batch)  # the training routine, for either layout

    def step(name: str) -> float:
        batch = batches[name]
        start = time.perf_counter()
        values, lengths = logps(name, batch)
        b, k = batch["mask"].shape
        policy = to_lists(values, batch["list_index"], b, k)
        ref = policy.detach() - 0.1
        loss = objective(
            policy,
            ref,
            batch["scores"],
            mask=batch["mask"],
            lengths=to_lists(lengths.to(values.dtype), batch["list_index"], b, k),
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"unshared": [], "shared": []}
    for name in times:
        for _ in range(s.warmup):
            step(name)
    for _ in range(repeats * s.shared_steps):  # alternate step by step
        for name in times:
            times[name].append(step(name))
    t = {name: median(v) for name, v in times.items()}
    label = f"4 shared prompt P={s.shared_prompt_len} K={s.shared_k} L={s.shared_response_len}"
    return [
        entry(
            label,
            "tokens through model",
            tokens["shared"],
            tokens["unshared"],
            tokens["unshared"] / tokens["shared"],
            ">= 2.0",
            padded_tokens={n: int(b["input_ids"].numel()) for n, b in batches.items()},
        ),
        entry(label, "fwd+bwd+step s", t["shared"], t["unshared"], t["unshared"] / t["shared"], ">= 1.5"),
    ]


# --- report ---------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import datasets
    import torch
    import transformers
    import trl

    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "datasets": datasets.__version__,
    }


def print_table(rows: list[dict]) -> None:
    head = f"{'row':<36} {'metric':<26} {'prefrun':>11} {'baseline':>11} {'ratio':>7}  {'target':<8} ok"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['row']:<36} {r['metric']:<26} {r['prefrun']:>11.4g} {r['baseline']:>11.4g} "
            f"{r['ratio']:>6.2f}x  {r['target']:<8} {'yes' if r['ok'] else 'NO'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per row (default 3, quick 1)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--out", help="default outputs/bench/bench.json (--quick: bench-quick.json)")
    parser.add_argument("--child", choices=("prefrun", "trl"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.child:
        child_main(args.child, sizes)
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(wanted) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {ROWS}")
    quiet()
    model_dir(sizes)  # build the model once, outside any timing
    start = time.perf_counter()
    rows: list[dict] = []
    for name in wanted:
        t0 = time.perf_counter()
        if name == "pairwise":
            rows += row_pairwise(sizes, repeats, args.quick)
        elif name == "listwise":
            rows += row_listwise(sizes, repeats)
        elif name == "sweep":
            rows += row_sweep(sizes, repeats)
        elif name == "sampler":
            from bench_sampler import row_sampler  # row 5 lives in its own script (scripts/ is on sys.path)

            rows += row_sampler(sizes, repeats, args.quick)
        elif name in ("rm_pairs", "rm_lists"):
            import bench_reward_model as rm  # rows 6 and 7 live in their own script

            rows += (rm.row_rm_pairs if name == "rm_pairs" else rm.row_rm_lists)(sizes, repeats, args.quick)
        elif name == "diffusion":
            from bench_diffusion import row_diffusion  # rows 8 and 9 live in their own script

            rows += row_diffusion(repeats, args.quick)
        else:
            rows += row_shared(sizes, repeats)
        print(f"[bench] {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "repeats": repeats,
        "machine": machine(),
        "sizes": asdict(sizes),
        "rows": rows,
        "total_s": time.perf_counter() - start,
    }
    out = Path(args.out or OUT / ("bench-quick.json" if args.quick else "bench.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(rows)
    m = report["machine"]
    print(
        f"\n{m['cores']} cores, torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}; "
        f"{repeats} repeats, {report['total_s']:.0f}s; written {out}"
    )
    if args.quick:
        print("--quick: smoke-test sizes (K=4, micro model); the targets apply to the full run only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
