"""Which backend samples, and the one-line error when vLLM is asked for and cannot run.

The vLLM path itself needs a GPU and the vllm package, which CI has not: it is not exercised here.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from prefrun.errors import PrefrunError
from prefrun.generation import SamplingSettings, sample, vllm_backend
from prefrun.generation.vllm_backend import prompt_seed, resolve_backend

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


def pretend(monkeypatch, cuda: bool, vllm: bool) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(
        vllm_backend.importlib.util,
        "find_spec",
        lambda name, *a: (object() if vllm else None) if name == "vllm" else find_spec(name, *a),
    )


def test_auto_picks_vllm_only_with_cuda_vllm_and_a_model_on_the_gpu(monkeypatch):
    pretend(monkeypatch, cuda=True, vllm=True)
    assert resolve_backend("auto", GPU) == "vllm"
    assert resolve_backend("auto", CPU) == "hf"  # a model kept on the CPU samples there
    assert resolve_backend("hf", GPU) == "hf"
    assert resolve_backend("vllm", CPU) == "vllm"
    for cuda, vllm in ((True, False), (False, True), (False, False)):
        pretend(monkeypatch, cuda=cuda, vllm=vllm)
        assert resolve_backend("auto", GPU) == "hf"


@pytest.mark.parametrize(
    "cuda, vllm, says",
    [
        (False, True, "needs CUDA"),
        (True, False, "needs the vllm package"),
        (False, False, "needs CUDA .* and the vllm"),
    ],
)
def test_vllm_without_cuda_or_vllm_is_one_line_naming_what_is_missing(monkeypatch, cuda, vllm, says):
    pretend(monkeypatch, cuda=cuda, vllm=vllm)
    with pytest.raises(PrefrunError, match=f"generation.backend=vllm {says}") as error:
        resolve_backend("vllm", GPU)
    assert "\n" not in str(error.value) and "generation.backend=hf" in str(error.value)


def test_sampling_with_vllm_here_fails_before_any_work(micro_model, monkeypatch):
    pretend(monkeypatch, cuda=False, vllm=False)
    model, tokenizer = micro_model
    model.train()
    with pytest.raises(PrefrunError, match="generation.backend=vllm needs CUDA"):
        sample(model, tokenizer, [[5, 6, 7]], SamplingSettings(backend="vllm"))
    assert model.training  # handed back in the mode it came in
    assert sample(model, tokenizer, [[5, 6, 7]], SamplingSettings(backend="auto", max_new_tokens=2)).token_ids


def test_unknown_backend_lists_the_choices():
    with pytest.raises(PrefrunError, match="choose one of auto, hf, vllm"):
        resolve_backend("tgi", CPU)


def test_each_prompts_k_child_seeds_are_its_own():
    """vLLM seeds child k of a request with seed + k: prompts' seed ranges must not overlap."""
    k = 8
    seen: set[int] = set()
    for b in range(500):
        children = {prompt_seed(3, b, k) + j for j in range(k)}
        assert not children & seen
        seen |= children
    assert prompt_seed(3, 0, k) != prompt_seed(4, 0, k)
