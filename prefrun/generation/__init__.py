"""Sampling from a causal LM: K samples per prompt, the prompt prefilled once (HF generate or vLLM)."""

from prefrun.generation.sampler import Samples, SamplingSettings, encode_prompts, sample, settings_from_config

__all__ = ["SamplingSettings", "Samples", "encode_prompts", "sample", "settings_from_config"]
