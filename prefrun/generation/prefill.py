"""The prompt prefilled once: its KV cache, repeated for the K samples, with room reserved for the samples.

For a batch of left-padded prompts, one forward over each prompt without its last token fills a
``DynamicCache``; ``batch_repeat_interleave(K)`` lays it out as rows b·K + k, the layout of the prompt repeated
K times. ``generate`` handed this cache and the full prompts repeated K times computes from the last prompt
token on, so the prompt goes through the model B times instead of K·B times. Positions follow ``generate``'s
own rule (cumsum of the attention mask − 1, 0 on padding), so the cached keys are the ones the plain call
computes.

Decoding with a ``DynamicCache`` concatenates the whole cache with each new token (``torch.cat`` per layer and
step), which costs O(cache) per step, and the K-fold prompt KV makes that cache large. The full-attention
layers of this cache therefore keep their keys and values in a buffer with room for the samples' tokens and
write each step in place (``ReservedLayer``); ``generate`` reads the same values through a view.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of a larger buffer: new tokens are written in place."""

    def reserve(self, extra: int) -> None:
        """Room for ``extra`` more positions after the cached ones."""
        n, heads, length, dim = self.keys.shape
        self._buffers = [t.new_empty(n, heads, length + extra, dim) for t in (self.keys, self.values)]
        for buffer, cached in zip(self._buffers, (self.keys, self.values)):
            buffer[:, :, :length] = cached
        self._length = length
        self.keys, self.values = (b[:, :, :length] for b in self._buffers)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self._length + key_states.shape[-2]
        if end > self._buffers[0].shape[-2]:  # out of room (never with the reserve below): double it
            self.reserve(max(end - self._length, self._buffers[0].shape[-2]))
        for buffer, new in zip(self._buffers, (key_states, value_states)):
            buffer[:, :, self._length : end] = new
        self._length = end
        self.keys, self.values = (b[:, :, :end] for b in self._buffers)
        return self.keys, self.values


def prefill(model: Any, ids: torch.Tensor, mask: torch.Tensor, k: int, new_tokens: int) -> Any:
    """The cache of left-padded prompts ``ids`` without their last token, each row repeated ``k`` times, with
    room for the last prompt token and ``new_tokens`` sampled ones."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    model(
        input_ids=ids[:, :-1],
        attention_mask=mask[:, :-1],
        position_ids=positions[:, :-1],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,  # the prompt's logits are not needed: generate computes the next token's
    )
    cache.batch_repeat_interleave(k)
    for layer in cache.layers:
        if type(layer) is DynamicLayer and layer.get_seq_length() > 0:  # sliding-window layers keep their own rule
            layer.__class__ = ReservedLayer
            layer.reserve(new_tokens + 1)
    return cache
