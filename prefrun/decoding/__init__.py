"""Decoders: how a model answers at evaluation time (``decode=<name>``, conf/decode/<name>.yaml).

sample   the sampler as it is: one sample per prompt                       (conf/decode/sample.yaml)
bon      best-of-N by a reward source: N samples, one prefill, the best   (conf/decode/bon.yaml)
dbs      diverse beam search: G groups, Hamming diversity penalty λ       (conf/decode/dbs.yaml)

decoder = build_decoder(cfg.decode, reward=lambda: source)   # reward: built on first use, if needed
decoded = decoder.decode(model, tokenizer, prompts, prompt_ids, settings)
decoded.samples   # prefrun.generation.Samples, K = 1: the answers
decoded.report    # per-response cost (forwards, prefills, reward calls, wall time) and the decoder's figures
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefrun.decoding.base import Decoded, Decoder, ForwardCounter
from prefrun.errors import PrefrunError
from prefrun.registry import Registry

DECODERS = Registry(
    "decoder", modules=("prefrun.decoding.sample", "prefrun.decoding.bon", "prefrun.decoding.dbs"), config_key="decode"
)


def build_decoder(decode_cfg: Any, reward: Callable[[], Any] | None = None) -> Decoder:
    """The decoder ``decode_cfg.name`` names, built from its own settings; ``reward`` builds its reward source."""
    name = decode_cfg.get("name") if decode_cfg is not None else None
    if not name:
        raise PrefrunError(f"decode.name is not set; choose a decoder: decode=<{'|'.join(DECODERS.names())}>")
    return DECODERS.get(str(name))(decode_cfg, reward)


__all__ = ["DECODERS", "Decoded", "Decoder", "ForwardCounter", "build_decoder"]
