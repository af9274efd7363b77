#!/usr/bin/env python
"""make gpu-check: prefrun's GPU paths on one GPU in one command (under 8 minutes on one H200).

    python scripts/gpu_check.py                 # on a CUDA machine: the five parts below
    python scripts/gpu_check.py --dry-run       # the same code paths on CPU at toy sizes (well under a minute)
    python scripts/gpu_check.py --parts train,smokes     # a subset (a rerun of what failed)

Writes one JSON (``$OUT/gpu_check.json`` when ``OUT`` is set, else outputs/gpu_check/gpu_check.json, or
``--out``), rewritten after every part so a killed run keeps what it measured, and prints a short table.
Every part is timed and fault-isolated (its own try/except and time limit; each side and each smoke inside a
part too; the smokes run as child processes); the JSON records each part's status ("ok", "failed: <error
line>", "skipped: <why>") and the versions of torch, CUDA, transformers, TRL and the GPU.

1. train     bf16 DPO training of a 1.1B-parameter Llama (TinyLlama-1.1B's shape, arXiv 2401.02385:
             hidden 2048, 22 layers, 32 heads, 4 KV heads, vocabulary 32000; random init, no download),
             TRL's DPOTrainer vs prefrun's ListTrainer (objective=dpo) on the same weights, data and batch
             (32 pairs per step, 64-token prompts, 64-token responses), once with the prompt packed once per
             pair (prefrun's default, train.shared_prompt=auto) and once without: data tokens/s (prompt +
             response per response, what both trainers count), model FLOP utilisation, peak GPU memory
             (torch.cuda.max_memory_allocated, reset before each side builds its model). Weights in bf16 with
             bf16 autocast, as prefrun runs a hub preset (model.dtype=bfloat16) under hardware=gpu. Attention:
             SDPA, then the first flash attention that the probes find working: transformers'
             flash_attention_4/3/2 (they need the flash-attn packages), else SDPA restricted to torch's own
             flash kernel (``sdpa_flash``: rows without a padding or packing mask only, so a packed side may
             fail there; its error is the finding).
2. listwise  K = 8 responses per prompt: prefrun ``lipo`` (one pass over the B·K sequences) vs TRL on all 28
             pairs of each list (B·K/2 pairs per step, the same sequences per step): prompts/s over one epoch.
3. sampler   prefrun.generation.sample on CUDA (each prompt prefilled once, its KV cache shared by its K
             samples) vs the prompt repeated K times in one ``generate`` call: samples/s, K = 8, 128-token
             prompts, 64 new tokens, 16 prompts per call, temperature 1.
4. smokes    the engines one GPU runs, each a prefrun command in a child process (a few steps on the tiny
             model): ``hardware=fsdp hardware.num_processes=1`` as typed and under ``torchrun
             --nproc_per_node=1``, ``hardware.gradient_checkpointing=true``, ``model.peft=lora``, and DeepSpeed
             ZeRO-2 (``hardware=zero2``) both ways when deepspeed is installed. Each reports pass/fail, its
             error line, and the engine its Trainer really ran (a smoke passes only when that engine is on).
5. cuda_paths  UDM prompt embeddings (prefrun.trainers.density_ratio) and PoFT baseline scores
             (prefrun.trainers.baseline_scores) in bf16 on the GPU for a few examples, against fp32 on CPU:
             ‖x − x_fp32‖ / ‖x_fp32‖ (bf16 lands between 1e-3 and 1e-2), and the UDM weights end to end.

Model FLOPs (MFU = model FLOPs per second / 790 TFLOP/s, the bf16 dense rate measured for an 8192³ matmul on
the H200; Chowdhery et al. 2022, arXiv 2204.02311, appendix B):

    FLOPs per trained token = 6·N + 6·L·d·T

N = parameters in matrix products (all but the input embedding when it is untied), L layers, d hidden size,
T the length of the token's row: 6·N is forward (2N) plus backward (4N) of every weight matrix (Kaplan et al.
2020, arXiv 2001.08361, §2.1), 6·L·d·T causal attention's QKᵀ and AV (12·L·d·T halved by the mask). Tokens
are every position of the rows the model runs with gradient (padding included; packed rows hold the prompt
once); the reference pass (precomputed without gradient before training) is not counted. The LM-head share
of 6·N is counted at every position although the fused head projects only response positions (a few % over).

The GPU machine lacks TRL, Hydra, datasets and deepspeed, and has transformers 5.17 where prefrun needs the
newer one it is tested with: first run ``make gpu-wheels`` here (scripts/gpu_wheels.txt into .whl/, ~21 MiB;
with the working tree ~22 of the 64 MiB a call carries). Then one device call (the command is one line; the
script stops starting parts after ``--budget-s`` 450 s, so it ends inside the 570 s limit with time to spare):

    run(carry=[".whl"], timeout_s=570, command="python3 -m pip install -q --no-index --no-deps --no-compile
        --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
        set -o pipefail; PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py 2>&1 | tee $OUT/gpu_check.log")

$OUT/gpu_check.json and the log come back; a failed part alone reruns with ``--parts <name>``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# prefrun from the working tree (the GPU machine installs no package), and bench.py beside this script.
for _path in (str(ROOT / "scripts"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

PEAK_BF16_FLOPS = 790e12  # the H200's measured bf16 dense rate
PARTS = ("train", "listwise", "sampler", "cuda_paths", "smokes")  # run in this order; smokes last (children)
LABELS = {
    "train": "1 bf16 DPO",
    "listwise": "2 listwise",
    "sampler": "3 sampler",
    "smokes": "4 smokes",
    "cuda_paths": "5 CUDA paths",
}
PART_LIMIT_S = {"train": 200, "listwise": 120, "sampler": 100, "cuda_paths": 90, "smokes": 270}
from prefrun.results.files import PACKAGES  # noqa: E402 - after the repository is on sys.path

FLASH_CANDIDATES = ("flash_attention_4", "flash_attention_3", "flash_attention_2", "sdpa_flash")
FLOPS_FORMULA = "6*N + 6*L*d*T per trained token; MFU against 790 TFLOP/s bf16 dense"
# What every run's env.json records, and the engines and I/O libraries only this check exercises.
VERSIONED = (*PACKAGES[1:], "deepspeed", "pyarrow", "fsspec", "huggingface-hub", "safetensors")


@dataclass(frozen=True)
class Sizes:
    # the policy of parts 1-3: TinyLlama-1.1B's shape, random init
    hidden: int = 2048
    intermediate: int = 5632
    layers: int = 22
    heads: int = 32
    kv_heads: int = 4
    vocab: int = 32000  # ≥ the tokenizer's; ids beyond it are never in the data
    tied: bool = False
    words: int = 2000  # the tokenizer's words, one token each (bench.py's data)
    # 1. pairwise
    prompt_len: int = 64
    response_len: int = 64  # tokens, EOS included
    pair_batch: int = 32  # pairs per optimizer step
    warmup: int = 3  # steps not timed
    timed: int = 10
    # 2. listwise
    list_k: int = 8
    list_prompts: int = 64
    list_batch: int = 8  # prompts per step (B·K sequences); TRL gets B·K/2 pairs per step
    # 3. sampler
    sample_prompt_len: int = 128
    sample_k: int = 8
    sample_new_tokens: int = 64
    sample_prompts: int = 16  # prompts per generate call
    sample_repeats: int = 3
    # 4. smokes (the tiny model)
    smoke_steps: int = 3
    smoke_timeout_s: int = 240
    # 5. UDM / PoFT: a small model, on the device in bf16 and on CPU in fp32
    check_hidden: int = 256
    check_intermediate: int = 1024
    check_layers: int = 4
    check_heads: int = 4
    check_examples: int = 8


FULL = Sizes()
DRY = replace(
    FULL,
    hidden=32,
    intermediate=64,
    layers=2,
    heads=2,
    kv_heads=1,
    vocab=512,
    words=100,
    prompt_len=8,
    response_len=6,
    pair_batch=4,
    warmup=1,
    timed=2,
    list_k=4,
    list_prompts=2,
    list_batch=2,
    sample_prompt_len=16,
    sample_k=4,
    sample_new_tokens=6,
    sample_prompts=4,
    sample_repeats=1,
    smoke_steps=2,
    smoke_timeout_s=150,
    check_hidden=32,
    check_intermediate=64,
    check_layers=2,
    check_heads=2,
    check_examples=6,
)
MICRO_MODEL = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_heads=2"]  # dry-run smokes


class Skip(Exception):
    """A part or side that cannot run here: recorded as "skipped: <why>"."""


class PartTimeout(BaseException):
    """A part over its time limit (a BaseException, so no library ``except Exception`` swallows it)."""


@dataclass
class Context:
    sizes: Sizes
    dry_run: bool
    device: str  # cuda | cpu
    tmp: Path
    cache: Path
    deadline: float  # time.monotonic() by which the last part must end

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def dtype(self) -> Any:
        import torch

        return torch.bfloat16 if self.cuda else torch.float32  # bf16 matmuls on CPU: slow and lossy

    @property
    def mixed_precision(self) -> str:
        return "bf16" if self.cuda else "no"

    @property
    def words(self) -> list[str]:
        return [str(i) for i in range(self.sizes.words)]

    def check_model_dir(self) -> Path:
        """The small model of part 5, whose tokenizer every part uses (each word one token)."""
        from prefrun.models.tiny import tiny_model_dir

        s = self.sizes
        cfg = {
            "hidden_size": s.check_hidden,
            "intermediate_size": s.check_intermediate,
            "num_layers": s.check_layers,
            "num_heads": s.check_heads,
            "max_position_embeddings": 512,
            "init_seed": 0,
        }
        return tiny_model_dir(cfg, self.words, self.cache)


# --- helpers ------------------------------------------------------------------------------------------
def error_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def isolated(fn: Callable[[], dict]) -> dict:
    """``fn()`` with status "ok", or its failure as "failed: <error line>" (a part's time limit still stops it)."""
    start = time.perf_counter()
    try:
        out = fn()
        out.setdefault("status", "ok")
    except Skip as e:
        out = {"status": f"skipped: {e}"}
    except Exception as e:  # noqa: BLE001 - every failure is a finding to record
        out = {"status": f"failed: {error_line(e)}", "traceback": traceback.format_exc().splitlines()[-12:]}
    finally:
        free_memory()
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def gib(n: float | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


def sync(ctx: Context) -> None:
    if ctx.cuda:
        import torch

        torch.cuda.synchronize()


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        raise PartTimeout(f"over its {seconds}s time limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def relative_error(x: Any, ref: Any) -> float:
    import numpy as np

    x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


# --- the 1.1B policy --------------------------------------------------------------------------------------
def llama_config(s: Sizes, tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=max(s.vocab, len(tokenizer)),
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=s.tied,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def attention(name: str) -> tuple[str, Any]:
    """(attn_implementation, context to train under) of an attention variant."""
    if name == "sdpa_flash":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return "sdpa", lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return name, contextlib.nullcontext


def build_model(ctx: Context, tokenizer: Any, attn: str, seed: int = 0) -> Any:
    """The policy with random weights, made on the device (the same seed gives every side the same weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(ctx.device):
        model = AutoModelForCausalLM.from_config(
            llama_config(ctx.sizes, tokenizer), dtype=ctx.dtype, attn_implementation=attention(attn)[0]
        )
    return model


def matmul_params(model: Any) -> int:
    """N of the FLOPs formula: every parameter but the input embedding, unless the LM head shares it."""
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embed
    return total if tied else total - embed.numel()


class ForwardCounter:
    """Counts the positions and model FLOPs of every forward the decoder runs with gradient (no sync)."""

    def __init__(self, model: Any):
        import torch

        cfg = model.config
        self.n = matmul_params(model)
        self.layers, self.hidden = cfg.num_hidden_layers, cfg.hidden_size
        self.tokens = 0
        self.flops = 0.0

        def count(module: Any, args: tuple, kwargs: dict) -> None:
            if not torch.is_grad_enabled():
                return  # the reference pass, evaluation
            x = kwargs.get("input_ids")
            x = x if x is not None else (args[0] if args else kwargs.get("inputs_embeds"))
            rows, width = int(x.shape[0]), int(x.shape[1])
            self.tokens += rows * width
            self.flops += rows * width * (6.0 * self.n + 6.0 * self.layers * self.hidden * width)

        self.handle = model.get_decoder().register_forward_pre_hook(count, with_kwargs=True)


def step_marks(ctx: Context, counter: ForwardCounter) -> Any:
    """A callback that synchronizes the device at every step end and marks (time, positions, FLOPs).

    Added before bench.timed_train's clock, so its marks fall at the same step ends after the same sync."""
    from transformers import TrainerCallback

    class Marks(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, int, float]] = []

        def on_step_end(self, *a, **k):
            sync(ctx)
            self.marks.append((time.perf_counter(), counter.tokens, counter.flops))

    return Marks()


def window(marks: list[tuple[float, int, float]], warmup: int) -> dict[str, float]:
    """Positions/s and FLOP/s between the end of step ``warmup`` and the last step."""
    if len(marks) <= warmup or warmup < 1:
        return {}
    (t0, n0, f0), (t1, n1, f1) = marks[warmup - 1], marks[-1]
    return {"model_tokens_per_s": (n1 - n0) / (t1 - t0), "model_flops_per_s": (f1 - f0) / (t1 - t0)}


# --- versions -------------------------------------------------------------------------------------------
def versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in VERSIONED:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    try:
        import transformers

        out["transformers_loaded"] = f"{transformers.__version__} from {Path(transformers.__file__).parent}"
    except Exception as e:  # noqa: BLE001
        out["transformers_loaded"] = f"import failed: {error_line(e)}"
    try:
        import torch

        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out["gpu"] = p.name
            out["gpu_capability"] = f"{p.major}.{p.minor}"
            out["gpu_memory_gib"] = gib(p.total_memory)
            out["gpu_count"] = torch.cuda.device_count()
    except Exception as e:  # noqa: BLE001
        out["torch_error"] = error_line(e)
    return out


# --- part 1: bf16 DPO training ---------------------------------------------------------------------------
def probe_attention(ctx: Context, name: str) -> dict[str, Any]:
    """A forward + backward of a one-layer Llama with ``name``'s attention; with and without padding."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    impl, context = attention(name)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    out: dict[str, Any] = {}
    try:
        with torch.device(ctx.device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=ctx.dtype, attn_implementation=impl)
        out["implementation"] = model.config._attn_implementation
        ids = torch.randint(0, 128, (2, 16), device=ctx.device)
        for label, mask in (
            ("unpadded", torch.ones_like(ids)),
            ("padded", (torch.arange(16, device=ctx.device) >= 4).long().expand(2, 16)),
        ):
            try:
                with context():
                    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
                    loss.backward()
                sync(ctx)
                out[label] = "ok" if torch.isfinite(loss) else f"non-finite loss {float(loss)}"
            except Exception as e:  # noqa: BLE001
                out[label] = f"failed: {error_line(e)}"
    except Exception as e:  # noqa: BLE001
        out["unpadded"] = out["padded"] = f"failed: {error_line(e)}"
    out["ok"] = out.get("unpadded") == "ok"
    return out


def train_side(ctx: Context, side: str, attn: str, pairs: list[dict], tok_dir: Path) -> dict[str, Any]:
    """One side of part 1 (trl | prefrun | prefrun_unpacked): its own model, trainer and peak memory."""
    import bench
    import torch

    s = ctx.sizes
    free_memory()
    before = torch.cuda.memory_allocated() if ctx.cuda else None
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    tokenizer = bench.load_tokenizer(tok_dir)
    model = build_model(ctx, tokenizer, attn)
    counter = ForwardCounter(model)
    out_dir = str(ctx.tmp / f"train-{attn}-{side}")
    args = bench.dpo_args(
        out_dir, s.pair_batch, s.warmup + s.timed, device=ctx.device, mixed_precision=ctx.mixed_precision
    )
    if side == "trl":
        trainer = bench.trl_trainer(tok_dir, pairs, s.pair_batch, s.warmup + s.timed, out_dir, model=model, args=args)
    else:
        packing = "auto" if side == "prefrun" else "off"
        records = bench.as_pairs_from_trl(pairs)
        trainer = bench.prefrun_trainer(
            tok_dir,
            records,
            "dpo",
            s.pair_batch,
            s.warmup + s.timed,
            out_dir,
            model=model,
            args=args,
            shared_prompt=packing,
        )
    marks = step_marks(ctx, counter)
    trainer.add_callback(marks)
    try:
        with attention(attn)[1]():
            timing = bench.timed_train(trainer, s.warmup)
        result: dict[str, Any] = {
            "tokens_per_s": timing.get("tokens_per_s"),
            "step_s": timing.get("step_s"),
            "steps": timing["steps"],
            "train_s": timing["train_s"],
            **window(marks.marks, s.warmup),
            "matmul_params": counter.n,
            "shared_prompt": getattr(trainer, "data_collator", None).__class__.__name__ == "SharedPromptCollator",
            "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        }
        if "model_flops_per_s" in result:
            result["model_tflops_per_s"] = result["model_flops_per_s"] / 1e12
            result["mfu"] = result["model_flops_per_s"] / PEAK_BF16_FLOPS if ctx.cuda else None
        if ctx.cuda:
            result["peak_gpu_gib"] = gib(torch.cuda.max_memory_allocated())
            result["allocated_before_gib"] = gib(before)
        else:
            result["peak_gpu_gib"] = None  # needs CUDA
        return result
    finally:
        counter.handle.remove()
        del trainer, model
        free_memory()


def ratio(a: dict, b: dict, key: str) -> float | None:
    x, y = a.get(key), b.get(key)
    return x / y if isinstance(x, int | float) and isinstance(y, int | float) and y else None


def part_train(ctx: Context) -> dict[str, Any]:
    import bench

    s = ctx.sizes
    probes = {name: probe_attention(ctx, name) for name in ("sdpa", *FLASH_CANDIDATES)}
    flash = next((name for name in FLASH_CANDIDATES if probes[name]["ok"]), None)
    tok_dir = ctx.check_model_dir()
    n_pairs = s.pair_batch * (s.warmup + s.timed)
    records = bench.text_records(n_pairs, 2, s.prompt_len, s.response_len, s.words, seed=1)
    pairs = bench.trl_pairs(records, "best")
    vocab = llama_config(s, bench.load_tokenizer(tok_dir)).vocab_size
    out: dict[str, Any] = {
        "attention_probes": probes,
        "flash": flash or "skipped: no flash attention ran in the probes",
        "flops_formula": FLOPS_FORMULA,
        "model": {
            **{k: getattr(s, k) for k in ("hidden", "intermediate", "layers", "heads", "kv_heads", "tied")},
            "vocab_size": vocab,  # the preset's 32000, or the tokenizer's when larger
        },
        "pairs_per_step": s.pair_batch,
        "prompt_len": s.prompt_len,
        "response_len": s.response_len,
        "runs": {},
    }
    if flash and ctx.dry_run:  # the same code path as sdpa's, under another attention: the probes cover it
        out["flash"] = f"{flash} (probes only in the dry run)"
    for attn in ["sdpa"] + ([flash] if flash and not ctx.dry_run else []):
        sides = {
            side: isolated(lambda side=side, attn=attn: train_side(ctx, side, attn, pairs, tok_dir))
            for side in ("trl", "prefrun", "prefrun_unpacked")
        }
        sides["prefrun_over_trl"] = {
            "tokens_per_s": ratio(sides["prefrun"], sides["trl"], "tokens_per_s"),
            "unpacked_tokens_per_s": ratio(sides["prefrun_unpacked"], sides["trl"], "tokens_per_s"),
            "peak_gpu_gib": ratio(sides["prefrun"], sides["trl"], "peak_gpu_gib"),
        }
        out["runs"][attn] = sides
    return out


# --- part 2: listwise K = 8 ------------------------------------------------------------------------------
def list_side(ctx: Context, side: str, records: list[dict], tok_dir: Path) -> dict[str, Any]:
    import bench
    import torch

    s = ctx.sizes
    free_memory()
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    model = build_model(ctx, bench.load_tokenizer(tok_dir), "sdpa")
    out_dir = str(ctx.tmp / f"list-{side}")
    if side == "trl_all_pairs":
        batch = s.list_batch * s.list_k // 2  # the same sequences per step as prefrun's B·K
        args = bench.dpo_args(out_dir, batch, -1, device=ctx.device, mixed_precision=ctx.mixed_precision)
        trainer = bench.trl_trainer(
            tok_dir, bench.trl_pairs(records, "all"), batch, -1, out_dir, model=model, args=args
        )
    else:
        args = bench.dpo_args(out_dir, s.list_batch, -1, device=ctx.device, mixed_precision=ctx.mixed_precision)
        trainer = bench.prefrun_trainer(
            tok_dir, records, "lipo", s.list_batch, -1, out_dir, beta=0.05, model=model, args=args
        )
    try:
        trainer.args.max_steps = s.warmup  # warm-up (and the reference pass), then one whole epoch
        trainer.train()
        trainer.args.max_steps = -1
        sync(ctx)
        timing = bench.timed_train(trainer, 0)
        sync(ctx)
        return {
            "prompts_per_s": s.list_prompts / timing["train_s"],
            "epoch_s": timing["train_s"],
            "steps": timing["steps"],
            "peak_gpu_gib": gib(torch.cuda.max_memory_allocated()) if ctx.cuda else None,
        }
    finally:
        del trainer, model
        free_memory()


def part_listwise(ctx: Context) -> dict[str, Any]:
    import bench

    s = ctx.sizes
    tok_dir = ctx.check_model_dir()
    records = bench.text_records(s.list_prompts, s.list_k, s.prompt_len, s.response_len, s.words, seed=2)
    out: dict[str, Any] = {
        "k": s.list_k,
        "prompts": s.list_prompts,
        "pairs": len(bench.trl_pairs(records, "all")),
        "prompts_per_step": s.list_batch,
    }
    for side in ("trl_all_pairs", "prefrun_lipo"):
        out[side] = isolated(lambda side=side: list_side(ctx, side, records, tok_dir))
    out["prefrun_over_trl"] = ratio(out["prefrun_lipo"], out["trl_all_pairs"], "prompts_per_s")
    return out


# --- part 3: the sampler ---------------------------------------------------------------------------------
def part_sampler(ctx: Context) -> dict[str, Any]:
    import statistics

    import bench
    import bench_sampler
    import torch

    from prefrun.generation import SamplingSettings, encode_prompts, sample

    s = ctx.sizes
    tok_dir = ctx.check_model_dir()
    tokenizer = bench.load_tokenizer(tok_dir)
    model = build_model(ctx, tokenizer, "sdpa").eval()
    try:
        records = bench.text_records(s.sample_prompts, 2, s.sample_prompt_len, 2, s.words, seed=5)
        prompt_ids = encode_prompts(tokenizer, [r["prompt"] for r in records], 4096)
        k, new = s.sample_k, s.sample_new_tokens
        settings = SamplingSettings(n=k, top_k=0, max_new_tokens=new, batch_size=len(prompt_ids), backend="hf", seed=0)

        def plain(seed: int, model: Any = model) -> list:
            with torch.device(ctx.device):  # bench_sampler's baseline builds its tensors on the default device
                return bench_sampler.plain_generate(model, tokenizer, prompt_ids, k, new, seed)

        sample(model, tokenizer, prompt_ids, settings)  # warm-up, both sides
        plain(0)
        times: dict[str, list[float]] = {"sampler": [], "plain": []}
        equal = total = truncated = 0
        for r in range(s.sample_repeats):
            got: dict[str, Any] = {}
            for name in ("sampler", "plain") if r % 2 == 0 else ("plain", "sampler"):
                sync(ctx)
                start = time.perf_counter()
                if name == "sampler":
                    samples = sample(model, tokenizer, prompt_ids, dataclasses.replace(settings, seed=r))
                    got[name], truncated = samples.token_ids, samples.truncated
                else:
                    got[name] = plain(r)
                sync(ctx)
                times[name].append(time.perf_counter() - start)
            pairs = [(x, y) for gx, gy in zip(got["sampler"], got["plain"]) for x, y in zip(gx, gy)]
            equal += sum(x == y for x, y in pairs)
            total += len(pairs)
        n = len(prompt_ids) * k
        sps = {name: n / statistics.median(v) for name, v in times.items()}
        return {
            "prompts": len(prompt_ids),
            "k": k,
            "prompt_len": s.sample_prompt_len,
            "new_tokens": new,
            "sampler_samples_per_s": sps["sampler"],
            "plain_samples_per_s": sps["plain"],
            "sampler_over_plain": sps["sampler"] / sps["plain"],
            "median_call_s": {name: statistics.median(v) for name, v in times.items()},
            "equal_samples": f"{equal}/{total}",
            "truncated_last_repeat": truncated,
        }
    finally:
        del model
        free_memory()


# --- part 5: UDM embeddings and PoFT baselines on the device ------------------------------------------------
def udm_check(ctx: Context, model_dir: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefrun.objectives import get_objective
    from prefrun.trainers.density_ratio import mean_pooled_embeddings, with_udm_weights

    s = ctx.sizes
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    device_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=ctx.dtype, attn_implementation="sdpa")
    device_model.to(ctx.device)
    cpu_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    n = s.check_examples
    # prompts of different lengths (padding inside a batch); desirable ones from the low words, the rest high
    half = s.words // 2
    prompts = [
        [
            tokenizer.convert_tokens_to_ids(f"▁{(i * 7 + j) % half + (0 if i % 2 == 0 else half)}")
            for j in range(4 + 3 * i)
        ]
        for i in range(n)
    ]
    labels = [i % 2 == 0 for i in range(n)]
    start = time.perf_counter()
    on_device = mean_pooled_embeddings(device_model, prompts, tokenizer.pad_token_id, 4, ctx.device)
    sync(ctx)
    embed_s = time.perf_counter() - start
    reference = mean_pooled_embeddings(cpu_model, prompts, tokenizer.pad_token_id, 4, "cpu")
    rows = [
        {"prompt_ids": p, "response_ids": [[5, 6]], "scores": [float(lab)], "labels": [lab]}
        for p, lab in zip(prompts, labels)
    ]
    cfg = OmegaConf.create({"udm": {"enabled": True, "prompt_sample_size": 1024}})
    start = time.perf_counter()
    weighted, info = with_udm_weights(
        Dataset.from_list(rows), device_model, tokenizer, cfg, get_objective("bco"), device=ctx.device, seed=0
    )
    weights = [w[0] for w in weighted["udm_weights"]]
    return {
        "examples": n,
        "dtype": str(ctx.dtype),
        "embedding_shape": list(on_device.shape),
        "embeddings_finite": bool(math.isfinite(float(on_device.sum()))),
        "relative_error_vs_fp32_cpu": relative_error(on_device, reference),
        "embed_s": embed_s,
        "with_udm_weights_s": time.perf_counter() - start,
        "undesirable_weights": [round(w, 4) for w, lab in zip(weights, labels) if not lab],
        "fit": info,
    }


def poft_check(ctx: Context, model_dir: Path) -> dict[str, Any]:
    import bench

    from prefrun.trainers.baseline_scores import score_records

    s = ctx.sizes
    records = bench.text_records(s.check_examples, 3, 12, 8, s.words, seed=7)
    scored: dict[str, Any] = {}
    score_s: dict[str, float] = {}
    for where in (ctx.device, "cpu") if ctx.cuda else ("cpu",):
        rows = copy.deepcopy(records)
        start = time.perf_counter()
        stats = score_records(
            rows,
            [{"path": str(model_dir), "dtype": "bfloat16"}],  # the hub presets' dtype; fp32 on CPU (model_dtype)
            words=ctx.words,
            cache_dir=ctx.tmp / f"poft-{where}",
            device=where,
            max_prompt_len=64,
            max_response_len=64,
        )
        score_s[where] = time.perf_counter() - start
        scored[where] = [r["baseline_logps"] for r in rows]
        if stats["misses"] != 1:
            raise AssertionError(f"expected one fresh scoring on {where}, got {stats}")
    device_values = scored[ctx.device]
    return {
        "examples": len(records),
        "responses": sum(map(len, device_values)),
        "dtype": "bfloat16" if ctx.cuda else "float32",
        "all_finite": all(math.isfinite(v) for row in device_values for v in row),
        "mean_logp_per_token": sum(map(sum, device_values)) / sum(map(len, device_values)),
        "relative_error_vs_fp32_cpu": relative_error(device_values, scored["cpu"]),
        "score_s": score_s,
    }


def part_cuda_paths(ctx: Context) -> dict[str, Any]:
    model_dir = ctx.check_model_dir()
    out: dict[str, Any] = {"device": ctx.device}
    out["udm_embeddings"] = isolated(lambda: udm_check(ctx, model_dir))
    out["poft_baselines"] = isolated(lambda: poft_check(ctx, model_dir))
    if not ctx.cuda:
        out["note"] = "dry run: both sides in fp32 on CPU (bf16 needs CUDA)"
    return out


# --- part 4: engine smokes (child processes) ---------------------------------------------------------------
@dataclass(frozen=True)
class Smoke:
    overrides: tuple[str, ...]
    torchrun: bool = False  # started under torchrun --nproc_per_node=1 (WORLD_SIZE set: prefrun's external ranks)
    needs_cuda: bool = False
    needs: str | None = None  # a module that must be importable


SMOKES = {
    "fsdp": Smoke(("hardware=fsdp", "hardware.num_processes=1"), needs_cuda=True),
    "fsdp_torchrun": Smoke(("hardware=fsdp", "hardware.num_processes=1"), torchrun=True, needs_cuda=True),
    "gradient_checkpointing": Smoke(("hardware=gpu", "hardware.gradient_checkpointing=true")),
    "lora": Smoke(("hardware=gpu", "model.peft=lora")),
    "zero2": Smoke(("hardware=zero2", "hardware.num_processes=1"), needs_cuda=True, needs="deepspeed"),
    "zero2_torchrun": Smoke(
        ("hardware=zero2", "hardware.num_processes=1"), torchrun=True, needs_cuda=True, needs="deepspeed"
    ),
}


def engine_ok(name: str, engine: dict[str, Any], steps: int) -> str | None:
    """Why the engine a smoke asked for did not run (None: it did)."""
    if not engine.get("finished"):
        return "training did not finish"
    if engine.get("global_step") != steps:
        return f"trained {engine.get('global_step')} steps, not {steps}"
    losses = engine.get("losses") or []
    if not losses or not all(math.isfinite(x) for x in losses):
        return f"losses {losses}"
    if name.startswith("fsdp") and not engine.get("fsdp"):
        return f"FSDP was not applied (distributed_type {engine.get('distributed_type')})"
    if name.startswith("zero2") and not engine.get("deepspeed"):
        return f"DeepSpeed was not applied (distributed_type {engine.get('distributed_type')})"
    if name == "gradient_checkpointing" and not engine.get("activation_checkpointing"):
        return "activation checkpointing was off in the trained model"
    if name == "lora" and not engine.get("peft"):
        return f"the trained model is a {engine.get('model_class')}, not a PEFT model"
    return None


def stderr_error(text: str) -> str | None:
    """The error line of a failed prefrun command: its last exception or "prefrun: error" line."""
    import re

    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pattern = re.compile(r"^(prefrun: error|[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b)")
    hits = [line for line in lines if pattern.match(line) and "HYDRA_FULL_ERROR" not in line]
    return (hits[-1] if hits else (lines[-1] if lines else None) or "")[:400] or None


def smoke_command(ctx: Context, name: str, smoke: Smoke, report: Path) -> list[str]:
    s = ctx.sizes
    overrides = list(smoke.overrides)
    if not ctx.cuda:
        overrides = ["hardware=cpu" if o == "hardware=gpu" else o for o in overrides]
    base = [
        "logger=none",
        "eval=none",
        "sft.enabled=false",
        "run.save_model=false",
        "run.quiet=true",
        f"train.steps={s.smoke_steps}",
        "train.batch_size=4",
        "train.logging_steps=1",
        "dataset.train_prompts=16",
        f"paths.output_dir={ctx.tmp / ('smoke-' + name)}",
        f"paths.cache_dir={ctx.tmp / ('smoke-' + name) / 'cache'}",
        *(MICRO_MODEL if ctx.dry_run else []),
    ]
    child = [str(Path(__file__).resolve()), "--smoke-child", str(report), *overrides, *base]
    if smoke.torchrun:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *child]
    return [sys.executable, *child]


def part_smokes(ctx: Context) -> dict[str, Any]:
    import importlib.util

    out: dict[str, Any] = {}
    running: dict[str, tuple[subprocess.Popen, Path, Any, float, list[str]]] = {}
    wanted = {}
    for name, smoke in SMOKES.items():
        if smoke.needs_cuda and not ctx.cuda:
            out[name] = {"status": "skipped: needs CUDA"}
        elif smoke.needs and importlib.util.find_spec(smoke.needs) is None:
            out[name] = {"status": f"skipped: {smoke.needs} is not installed (make gpu-wheels carries it)"}
        else:
            wanted[name] = smoke
    threads = max(1, (os.cpu_count() or 1) // max(1, len(wanted)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": str(threads),
    }
    for name, smoke in wanted.items():  # all at once: the GPU holds them, and their imports overlap
        report = ctx.tmp / f"smoke-{name}.json"
        cmd = smoke_command(ctx, name, smoke, report)
        log = open(ctx.tmp / f"smoke-{name}.log", "w+")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        running[name] = (proc, report, log, time.perf_counter(), cmd)
    try:
        collect_smokes(ctx, running, out)
    finally:  # the part's time limit: no smoke outlives it
        for proc, *_ in running.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
    results = [v["status"] for v in out.values()]
    out["summary"] = {
        "pass": results.count("pass"),
        "fail": results.count("fail"),
        "skipped": sum(r.startswith("skipped") for r in results),
    }
    return out


def collect_smokes(ctx: Context, running: dict[str, tuple], out: dict[str, Any]) -> None:
    """Wait for each smoke (within its time limit), read its engine report and output, judge it."""
    limit = min(ctx.sizes.smoke_timeout_s, max(5.0, ctx.deadline - time.monotonic() - 5))
    for name, (proc, report, log, start, cmd) in running.items():
        try:
            code = proc.wait(timeout=max(1.0, limit - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # this smoke's own process group (torchrun and its worker)
            proc.wait()
            code = None
        log.seek(0)
        text = log.read()
        log.close()
        engine = json.loads(report.read_text()) if report.exists() else {}
        entry: dict[str, Any] = {
            "command": " ".join(["prefrun", *[c for c in cmd if "=" in c and not c.startswith("--")]]),
            "torchrun": SMOKES[name].torchrun,
            "exit_code": code,
            "seconds": round(time.perf_counter() - start, 1),
            "engine": engine,
        }
        if code is None:
            entry.update(status="fail", error=f"timed out after {limit:.0f}s")
        elif code != 0:
            entry.update(status="fail", error=stderr_error(text) or f"exit code {code}")
        else:
            why = engine_ok(name, engine, ctx.sizes.smoke_steps)
            entry.update(status="fail" if why else "pass", error=why)
        if entry["status"] != "pass":
            entry["output_tail"] = text.strip().splitlines()[-25:]
        out[name] = entry


def engine_info(trainer: Any) -> dict[str, Any]:
    """What the Trainer really ran: engine, wrapping, precision, checkpointing, PEFT, steps and losses."""
    info: dict[str, Any] = {}

    def put(key: str, fn: Callable[[], Any]) -> None:
        try:
            info[key] = fn()
        except Exception as e:  # noqa: BLE001 - a missing attribute is itself the answer
            info[key] = f"unknown ({error_line(e)})"

    import torch

    acc = trainer.accelerator
    unwrapped = acc.unwrap_model(trainer.model)
    base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    put("distributed_type", lambda: str(acc.distributed_type))
    put("num_processes", lambda: acc.num_processes)
    put("fsdp", lambda: bool(trainer.is_fsdp_enabled))
    put("deepspeed", lambda: bool(trainer.is_deepspeed_enabled))
    put("wrapped_class", lambda: type(trainer.model_wrapped).__name__)
    put("model_class", lambda: type(trainer.model).__name__)
    put("peft", lambda: hasattr(unwrapped, "peft_config"))
    # transformers' current name first; the old one (deprecated, it warns) only where the new one is missing
    name = (
        "is_activation_checkpointing" if hasattr(base, "is_activation_checkpointing") else "is_gradient_checkpointing"
    )
    put("activation_checkpointing", lambda: bool(getattr(base, name, False)))
    put("mixed_precision", lambda: str(acc.mixed_precision))
    put("device", lambda: str(next(unwrapped.parameters()).device))
    put("param_dtype", lambda: str(next(unwrapped.parameters()).dtype))
    put("global_step", lambda: trainer.state.global_step)
    put("losses", lambda: [h["loss"] for h in trainer.state.log_history if "loss" in h])
    if torch.cuda.is_available():
        put("peak_gpu_gib", lambda: gib(torch.cuda.max_memory_allocated()))
    return info


def smoke_child(report: str, overrides: list[str]) -> None:
    """A prefrun command whose Trainer writes ``engine_info`` to ``report`` after training (rank 0)."""
    import transformers

    train = transformers.Trainer.train

    def reporting_train(self: Any, *args: Any, **kwargs: Any) -> Any:
        info: dict[str, Any] = {"finished": False}
        try:
            result = train(self, *args, **kwargs)
            info["finished"] = True
            return result
        finally:
            info.update(engine_info(self))
            if int(os.environ.get("RANK", "0")) == 0:
                Path(report).write_text(json.dumps(info, default=str))

    transformers.Trainer.train = reporting_train
    sys.argv = ["prefrun", *overrides]
    from prefrun.cli import main

    main()


# --- report ----------------------------------------------------------------------------------------------
def figures(name: str, part: dict[str, Any]) -> list[str]:
    """The table lines of one part."""

    def f(x: Any, spec: str = ".3g") -> str:
        return "-" if not isinstance(x, int | float) else format(x, spec)

    def pct(x: Any) -> str:
        return "-" if not isinstance(x, int | float) else f"{100 * x:.1f}%"

    lines: list[str] = []
    if name == "train":
        for attn, sides in part.get("runs", {}).items():
            for side in ("trl", "prefrun", "prefrun_unpacked"):
                r = sides.get(side, {})
                if r.get("status") != "ok":
                    lines.append(f"{attn:<11} {side:<17} {r.get('status')}")
                    continue
                lines.append(
                    f"{attn:<11} {side:<17} {f(r.get('tokens_per_s'), ',.0f'):>9} tok/s  step {f(r.get('step_s'))} s  "
                    f"MFU {pct(r.get('mfu'))}  {f(r.get('model_tflops_per_s'))} TFLOP/s  "
                    f"peak {f(r.get('peak_gpu_gib'))} GiB"
                )
            rel = sides.get("prefrun_over_trl", {})
            lines.append(
                f"{attn:<11} prefrun/trl       tokens/s {f(rel.get('tokens_per_s'), '.2f')}x (unpacked "
                f"{f(rel.get('unpacked_tokens_per_s'), '.2f')}x), peak memory {f(rel.get('peak_gpu_gib'), '.2f')}x"
            )
        lines.append(f"flash: {part.get('flash', '-')}")
    elif name == "listwise":
        for side in ("trl_all_pairs", "prefrun_lipo"):
            r = part.get(side, {})
            lines.append(
                f"{side:<15} {r.get('status') if r.get('status') != 'ok' else f(r.get('prompts_per_s')) + ' prompts/s'}"
            )
        lines.append(f"prefrun/trl     {f(part.get('prefrun_over_trl'), '.2f')}x  ({part.get('pairs')} pairs)")
    elif name == "sampler" and part.get("status") == "ok":
        lines.append(
            f"sampler {f(part.get('sampler_samples_per_s'))} samples/s, plain {f(part.get('plain_samples_per_s'))}: "
            f"{f(part.get('sampler_over_plain'), '.2f')}x; equal samples {part.get('equal_samples')}"
        )
    elif name == "smokes":
        for smoke, r in part.items():
            if smoke in SMOKES:
                lines.append(f"{smoke:<23} {r.get('status')}{': ' + str(r['error']) if r.get('error') else ''}")
    elif name == "cuda_paths":
        for key in ("udm_embeddings", "poft_baselines"):
            r = part.get(key, {})
            rel = r.get("relative_error_vs_fp32_cpu")
            lines.append(f"{key:<15} {r.get('status')}  rel. error vs fp32 CPU {f(rel, '.2e')}")
    return lines


def print_table(report: dict[str, Any]) -> None:
    v = report["versions"]
    print(
        f"\n{v.get('gpu', 'no GPU')} | torch {v.get('torch')} (CUDA {v.get('cuda')}), transformers "
        f"{v.get('transformers')}, trl {v.get('trl')}, deepspeed {v.get('deepspeed')}"
    )
    print(f"{'part':<14} {'status':<10} {'s':>6}")
    for name in PARTS:
        part = report["parts"].get(name)
        if part is None:
            continue
        status = part.get("status", "")
        short = status if len(status) <= 70 else status[:67] + "..."
        print(f"{LABELS[name]:<14} {short:<10} {part.get('seconds', 0):>6.1f}")
        for line in figures(name, part):
            print(f"    {line}")
    print(f"total {report['total_s']:.0f}s; written {report['out']}")


def write(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(out)


def default_out() -> Path:
    return (
        Path(os.environ["OUT"]) / "gpu_check.json"
        if os.environ.get("OUT")
        else ROOT / "outputs" / "gpu_check" / "gpu_check.json"
    )


def run_part(ctx: Context, name: str) -> dict[str, Any]:
    fn = {
        "train": part_train,
        "listwise": part_listwise,
        "sampler": part_sampler,
        "cuda_paths": part_cuda_paths,
        "smokes": part_smokes,
    }[name]
    left = ctx.deadline - time.monotonic()
    if left < 15:
        return {"status": "skipped: the time budget is spent", "seconds": 0.0}
    limit = int(min(PART_LIMIT_S[name], left))
    start = time.perf_counter()
    try:
        with time_limit(limit):
            out = isolated(lambda: fn(ctx))
    except PartTimeout as e:
        out = {"status": f"failed: {e}"}
    free_memory()
    out["seconds"] = round(time.perf_counter() - start, 2)
    out["limit_s"] = limit
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, toy sizes: the same code paths in well under a minute"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--out", help="the JSON (default $OUT/gpu_check.json, else outputs/gpu_check/gpu_check.json)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting parts after this long")
    parser.add_argument("--smoke-child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
        "TQDM_DISABLE": "1",
    }.items():
        os.environ.setdefault(key, value)
    if args.smoke_child:
        smoke_child(args.smoke_child, args.overrides)
        return 0
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {','.join(PARTS)}")
    started = time.perf_counter()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here; run it on the GPU machine, or --dry-run for the CPU check", file=sys.stderr
        )
        return 2
    import bench

    setup = isolated(lambda: bench.quiet() or {})  # imports datasets: a failure here is each part's failure too
    out = Path(args.out) if args.out else default_out()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        ctx = Context(
            sizes=DRY if args.dry_run else FULL,
            dry_run=args.dry_run,
            device="cpu" if args.dry_run else "cuda",
            tmp=Path(tmp),
            cache=ROOT / "outputs" / ".cache" / "gpu_check",
            deadline=time.monotonic() + args.budget_s,
        )
        report: dict[str, Any] = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "dry_run": args.dry_run,
            "device": ctx.device,
            "versions": versions(),
            "setup": setup,
            "sizes": dataclasses.asdict(ctx.sizes),
            "peak_bf16_flops": PEAK_BF16_FLOPS,
            "flops_formula": FLOPS_FORMULA,
            "parts": {},
            "out": str(out),
            "total_s": 0.0,
        }
        for name in PARTS:
            if name not in wanted:
                continue
            print(f"[gpu_check] {LABELS[name]} ...", file=sys.stderr, flush=True)
            report["parts"][name] = run_part(ctx, name)
            report["total_s"] = time.perf_counter() - started
            done = report["parts"][name]
            print(
                f"[gpu_check] {LABELS[name]}: {done['status']} ({done['seconds']:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
            write(report, out)
    report["total_s"] = time.perf_counter() - started
    write(report, out)
    print_table(report)
    failed = [n for n, p in report["parts"].items() if p["status"].startswith("failed")]
    smokes = report["parts"].get("smokes", {})
    failed += [f"smokes.{n}" for n, r in smokes.items() if isinstance(r, dict) and r.get("status") == "fail"]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
