"""One sampler: K samples for each of B prompts, each prompt prefilled once and shared by its K samples.

    y_1 … y_K ~ π(· | x)    at temperature T (0 = greedy), top-k, top-p (nucleus sampling, Holtzman et al.
                            2020, arXiv 1904.09751), up to max_new_tokens, ended by EOS or a stop string
    log π(y | x) = Σ_t log softmax(z_t)[y_t]     z_t the model's logits, at temperature 1

HF path (``generation.backend=hf``, and ``auto`` on CPU; ``vllm_backend`` documents the other). A batch of
prompts is left-padded and run through the model once without its last token (``prefill``); that KV cache,
repeated K times, is handed to ``generate`` with the K·B rows, which computes from the last prompt token on:
the prompt goes through the model B times instead of K·B times, and the cache has room reserved for the
samples, so decoding writes each token in place instead of copying the cache. The rows are laid out as the
plain way lays them out (the prompt repeated K times, row b·K + k), so both draw the same random numbers in
the same order: with equal seeds they give equal samples, unless the float difference between the two
prefills (~1e-7 in the logits) flips a draw. K = 1, greedy decoding (whose K samples are one sample,
computed once and repeated) and a model whose generation config names its own cache (static, hybrid) call
``generate`` plainly.

Log-probs are read from generate's raw logits (``output_logits``: before temperature, top-k and top-p), in
fp32: those of the sampling model at temperature 1, whatever the sampling settings. They cost
4·B·K·max_new_tokens·V bytes per batch; lower ``batch_size`` for a large vocabulary.

A sample ends at its first EOS (kept in its ids) or its first stop string (ids up to the token that completes
it, text cut right after it); one that reaches max_new_tokens without either is truncated. Its text is
decode(prompt + sample) minus decode(prompt) when the latter is a prefix of the former, else decode(sample),
special tokens skipped: a word that continues across the prompt boundary keeps its spacing.

Deterministic: ``torch.manual_seed(seed)`` once before the first batch, inside ``torch.random.fork_rng`` so
the caller's RNG state is left as it was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from prefrun.errors import PrefrunError
from prefrun.generation.prefill import prefill
from prefrun.generation.vllm_backend import BACKENDS, resolve_backend


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 1  # K samples per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()  # stop strings (the text is cut after the first one)
    seed: int = 0
    batch_size: int = 64  # prompts per generate call
    backend: str = "auto"  # auto | hf | vllm

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop", stop)
        rules = (
            ("n", self.n >= 1, "an integer ≥ 1"),
            ("temperature", self.temperature >= 0, "≥ 0 (0 = greedy)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("top_k", self.top_k >= 0, "≥ 0 (0 = off)"),
            ("max_new_tokens", self.max_new_tokens >= 1, "an integer ≥ 1"),
            ("batch_size", self.batch_size >= 1, "an integer ≥ 1"),
            ("stop", all(isinstance(s, str) and s for s in stop), "a list of non-empty strings"),
            ("backend", self.backend in BACKENDS, f"one of {', '.join(BACKENDS)}"),
        )
        for name, ok, want in rules:
            if not ok:
                raise PrefrunError(f"generation.{name}={getattr(self, name)!r}: must be {want}")


@dataclass
class Samples:
    prompt_ids: list[list[int]]  # [B] the prompts' token ids
    token_ids: list[list[list[int]]]  # [B][K] each sample's ids, EOS included when emitted, no padding
    texts: list[list[str]]  # [B][K] decoded continuations
    logps: torch.Tensor  # [B, K] float32: summed log π(y|x) at temperature 1 under the sampling model
    eos: torch.Tensor  # [B, K] bool: the sample ended with EOS (or a stop string)
    truncated: int  # samples cut by max_new_tokens


def settings_from_config(generation_cfg: Any, **overrides: Any) -> SamplingSettings:
    """SamplingSettings from the ``generation:`` config block (a DictConfig, a dict or None); ``overrides``
    (e.g. ``n=8, seed=cfg.seed``) win over the block."""
    if generation_cfg is not None and not isinstance(generation_cfg, dict):
        from omegaconf import OmegaConf

        generation_cfg = OmegaConf.to_container(generation_cfg, resolve=True)
    values = {**(generation_cfg or {}), **overrides}
    known = [f.name for f in dataclasses.fields(SamplingSettings)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise PrefrunError(f"generation.{unknown[0]}: unknown setting; the generation block takes {', '.join(known)}")
    if values.get("stop") is None:
        values["stop"] = ()
    return SamplingSettings(**values)


def encode_prompts(tokenizer: Any, prompts: list[str | list[dict]], max_prompt_len: int) -> list[list[int]]:
    """Token ids of text or chat-message prompts, rendered as training renders them (``tokenize_record``:
    text without special tokens, chat through the template with the generation prompt), keeping the end."""
    from prefrun.data.tokenize import tokenize_record

    records = ({"prompt": p, "responses": []} for p in prompts)
    return [tokenize_record(r, tokenizer, max_prompt_len, 1)["prompt_ids"] for r in records]


@torch.no_grad()
def sample(
    model: Any, tokenizer: Any, prompt_ids: list[list[int]], settings: SamplingSettings, *, stage: str = "sampling"
) -> Samples:
    """K = ``settings.n`` samples of each prompt (token ids), their texts, log-probs, EOS flags and truncations.

    ``stage``: the name its progress display shows (samples/total, rate, ETA; only a closing line when short).
    """
    if not prompt_ids or not all(prompt_ids):
        raise PrefrunError("sample: every prompt needs at least one token (got an empty prompt list or prompt)")
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        if resolve_backend(settings.backend, device) == "vllm":
            from prefrun.generation.vllm_backend import vllm_generate

            rows, steps = vllm_generate(model, tokenizer, prompt_ids, settings), None
        else:
            from prefrun.results.progress import Progress

            total = len(prompt_ids) * settings.n
            with Progress(stage, total, label="samples", unit="sample", min_interval=10) as shown:
                rows, steps = _hf_generate(model, tokenizer, prompt_ids, settings, eos_ids, device, shown)
        samples = _finish(tokenizer, prompt_ids, rows, steps, settings, eos_ids)
        if steps is None:  # vLLM: rescore under this model at temperature 1
            from prefrun.lm.logprobs import score_rows

            scored = [{"prompt_ids": p, "response_ids": ids} for p, ids in zip(prompt_ids, samples.token_ids)]
            samples.logps = torch.tensor(score_rows(model, scored, batch_size=settings.batch_size)[0])
    finally:
        model.train(was_training)
    return samples


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS first, then any further end tokens of the model's generation config."""
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    extra = extra if isinstance(extra, list) else [extra]
    ids = [tokenizer.eos_token_id, *extra]
    return list(dict.fromkeys(i for i in ids if i is not None))


def _hf_generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    settings: SamplingSettings,
    eos_ids: list[int],
    device: torch.device,
    shown: Any = None,
) -> tuple[list[list[list[int]]], list[list[torch.Tensor]]]:
    """[B][K] raw sampled ids (trailing padding included) and [B][K] per-token log-probs at T = 1."""
    greedy = settings.temperature == 0
    k = 1 if greedy else settings.n
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    kwargs: dict[str, Any] = dict(
        max_new_tokens=settings.max_new_tokens,
        pad_token_id=pad,
        eos_token_id=eos_ids[0] if len(eos_ids) == 1 else eos_ids,
        return_dict_in_generate=True,
        output_logits=True,
    )
    if greedy:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    else:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    if settings.stop:
        kwargs.update(stop_strings=list(settings.stop), tokenizer=tokenizer)
    # A model whose generation config asks for its own cache (static, hybrid) cannot be handed one: plain way.
    shared = k > 1 and getattr(model.generation_config, "cache_implementation", None) is None
    rows: list[list[list[int]]] = []
    steps: list[list[torch.Tensor]] = []
    devices = [device] if device.type != "cpu" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(settings.seed)
        for start in range(0, len(prompt_ids), settings.batch_size):
            ids, mask = _left_pad(prompt_ids[start : start + settings.batch_size], pad, device)
            new_tokens = settings.max_new_tokens
            cache = {"past_key_values": prefill(model, ids, mask, k, new_tokens)} if shared and ids.shape[1] > 1 else {}
            out = model.generate(
                input_ids=ids.repeat_interleave(k, 0), attention_mask=mask.repeat_interleave(k, 0), **kwargs, **cache
            )
            new = out.sequences[:, ids.shape[1] :]
            logps = torch.stack(
                [torch.log_softmax(z.float(), -1).gather(-1, new[:, t, None])[:, 0] for t, z in enumerate(out.logits)],
                dim=1,
            ).cpu()
            flat = new.tolist()
            copies = settings.n // k  # greedy: the one sample, n times
            for b in range(ids.shape[0]):
                rows.append([list(r) for r in flat[b * k : (b + 1) * k] for _ in range(copies)])
                steps.append([t for t in logps[b * k : (b + 1) * k] for _ in range(copies)])
            if shown is not None:
                shown.update(ids.shape[0] * settings.n)
    return rows, steps


def _left_pad(prompts: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask


def _finish(
    tokenizer: Any,
    prompt_ids: list[list[int]],
    rows: list[list[list[int]]],
    steps: list[list[torch.Tensor]] | None,
    settings: SamplingSettings,
    eos_ids: list[int],
) -> Samples:
    """Cut each raw sample where it ended, decode it, sum its log-probs; count the truncated ones."""
    token_ids, texts, ended, logps = [], [], [], []
    truncated = 0
    for b, (prompt, samples) in enumerate(zip(prompt_ids, rows)):
        prompt_text = tokenizer.decode(prompt, skip_special_tokens=True)
        cut = [_end(tokenizer, prompt, prompt_text, row, eos_ids, settings.stop) for row in samples]
        token_ids.append([ids for ids, _, _ in cut])
        texts.append([text for _, text, _ in cut])
        ended.append([done for _, _, done in cut])
        truncated += sum(not done for _, _, done in cut)
        if steps is not None:
            logps.append([float(s[: len(ids)].double().sum()) for s, (ids, _, _) in zip(steps[b], cut)])
    k = settings.n
    return Samples(
        prompt_ids=[list(p) for p in prompt_ids],
        token_ids=token_ids,
        texts=texts,
        logps=torch.tensor(logps, dtype=torch.float32) if steps is not None else torch.zeros(len(rows), k),
        eos=torch.tensor(ended, dtype=torch.bool).reshape(len(rows), k),
        truncated=truncated,
    )


def _end(
    tokenizer: Any, prompt: list[int], prompt_text: str, row: list[int], eos_ids: list[int], stop: tuple[str, ...]
) -> tuple[list[int], str, bool]:
    """(ids, text, ended) of one raw sample: cut after its first EOS, else after its first stop string."""
    for i, token in enumerate(row):
        if token in eos_ids:
            return row[: i + 1], _continuation(tokenizer, prompt, prompt_text, row[: i + 1]), True
    text = _continuation(tokenizer, prompt, prompt_text, row)
    if stop and _stop_end(text, stop) is not None:
        lo, hi = 1, len(row)  # the fewest tokens whose text holds a stop string (decoding grows with the ids)
        while lo < hi:
            mid = (lo + hi) // 2
            held = _stop_end(_continuation(tokenizer, prompt, prompt_text, row[:mid]), stop) is not None
            lo, hi = (lo, mid) if held else (mid + 1, hi)
        text = _continuation(tokenizer, prompt, prompt_text, row[:lo])
        return row[:lo], text[: _stop_end(text, stop)], True
    return row, text, False


def _stop_end(text: str, stop: tuple[str, ...]) -> int | None:
    """The end of the first stop string to complete in ``text``, or None."""
    ends = [text.find(s) + len(s) for s in stop if s in text]
    return min(ends) if ends else None


def _continuation(tokenizer: Any, prompt: list[int], prompt_text: str, ids: list[int]) -> str:
    full = tokenizer.decode(prompt + ids, skip_special_tokens=True)
    return full[len(prompt_text) :] if full.startswith(prompt_text) else tokenizer.decode(ids, skip_special_tokens=True)
