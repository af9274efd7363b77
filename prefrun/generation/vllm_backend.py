"""The sampler's backends: which one runs (``generation.backend``), and the vLLM one.

    generation.backend=auto   vLLM when CUDA is available, the ``vllm`` package importable and the model on a
                              CUDA device; HF ``generate`` otherwise (every CPU run, every test here)
    generation.backend=hf     HF ``generate`` with each prompt prefilled once (``prefrun.generation.sampler``)
    generation.backend=vllm   vLLM; without CUDA or vllm, a one-line error names what is missing

The vLLM path goes through TRL's integration, ``trl.generation.VLLMGeneration`` in ``colocate`` mode: TRL
builds the engine in this process from the model's ``name_or_path`` and pushes the model's current weights
into it (``sync_weights``: LoRA adapters merged, FSDP / ZeRO-3 shards gathered), so a policy under training
samples with the weights it has now. The samples are then drawn by that engine's ``LLM.generate`` with one
``SamplingParams(n=K, seed=s_b)`` per prompt rather than TRL's ``generate`` (which repeats each prompt K
times with n = 1 and one engine-wide seed): vLLM's prefix cache holds each prompt's KV once for its K
children, the prompt-shared prefill of the HF path, and a seeded request gives child k the seed s_b + k, so
prompt b gets s_b = (seed · 1000003 + b · K) mod 2³¹ and the same seed gives the same samples.

Log-probs: vLLM's own are computed by its kernels in the serving dtype, after temperature (TRL asks for
``processed_logprobs``). The sampler promises log π(y | x) at temperature 1 under the model it was given,
so it rescores the samples with ``prefrun.lm.logprobs.score_rows`` (one teacher-forced forward per batch).

``GPU_MEMORY`` is the share of the GPU vLLM reserves for its weights and KV cache; the rest is left to the
training model beside it.

Not covered by CI: CI has no GPU and no vllm. The tests cover the backend choice and the error only; the
vLLM path itself is for the GPU check script.
"""

from __future__ import annotations

import importlib.util
import weakref
from typing import Any

import torch

from prefrun.errors import PrefrunError

BACKENDS = ("auto", "hf", "vllm")
GPU_MEMORY = 0.3
_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → its engine, one per process


def vllm_missing() -> str:
    """What the vLLM backend lacks on this machine ("" when nothing)."""
    missing = []
    if not torch.cuda.is_available():
        missing.append("CUDA (torch.cuda.is_available() is False)")
    if importlib.util.find_spec("vllm") is None:
        missing.append("the vllm package")
    return " and ".join(missing)


def resolve_backend(name: str, device: torch.device | None = None) -> str:
    """``hf`` or ``vllm`` for the ``generation.backend`` setting ``name`` and the model's ``device``."""
    if name == "hf":
        return "hf"
    if name == "vllm":
        missing = vllm_missing()
        if missing:
            raise PrefrunError(
                f"generation.backend=vllm needs {missing}; install vllm on a CUDA machine or set generation.backend=hf"
            )
        return "vllm"
    if name == "auto":
        on_gpu = device is None or device.type == "cuda"
        return "vllm" if on_gpu and not vllm_missing() else "hf"
    raise PrefrunError(f"generation.backend={name!r}: choose one of {', '.join(BACKENDS)}")


def _engine(model: Any, tokenizer: Any) -> Any:
    """TRL's colocated vLLM engine for ``model`` (built on first use), holding the model's current weights."""
    engine = _ENGINES.get(model)
    if engine is None:
        from accelerate import Accelerator
        from trl.generation.vllm_generation import VLLMGeneration

        engine = VLLMGeneration(model, Accelerator(), tokenizer, mode="colocate", gpu_memory_utilization=GPU_MEMORY)
        _ENGINES[model] = engine
    engine.sync_weights()  # training moves the weights between calls
    return engine


def prompt_seed(seed: int, b: int, k: int) -> int:
    """The seed of prompt ``b``'s request; vLLM seeds its ``k`` children with this seed + 0 … k − 1."""
    return (seed * 1_000_003 + b * k) % 2**31


def vllm_generate(model: Any, tokenizer: Any, prompt_ids: list[list[int]], settings: Any) -> list[list[list[int]]]:
    """[B][K] raw sampled token ids (EOS included when emitted) from vLLM; the sampler post-processes them."""
    from vllm import SamplingParams

    engine = _engine(model, tokenizer)
    greedy = settings.temperature == 0
    k = 1 if greedy else settings.n
    params = [
        SamplingParams(
            n=k,
            temperature=settings.temperature,
            top_p=1.0 if greedy else settings.top_p,
            top_k=0 if greedy else settings.top_k,
            max_tokens=settings.max_new_tokens,
            stop=list(settings.stop) or None,
            include_stop_str_in_output=True,
            seed=prompt_seed(settings.seed, b, k),
        )
        for b in range(len(prompt_ids))
    ]
    outputs = engine.llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
    rows = [[list(c.token_ids) for c in out.outputs] for out in outputs]
    return [[list(r[0]) for _ in range(settings.n)] if greedy else r for r in rows]
