"""The built-in tiny causal LM: a small random-init Llama with a tokenizer built offline.

The tokenizer knows the synthetic task's words as whole tokens and falls back to UTF-8 bytes for
anything else (BPE with ``byte_fallback``, Metaspace pre-tokenizer, as Llama/Mistral tokenizers do),
so any dataset preset runs end to end on ``model=tiny`` and decoding is lossless.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
SPACE = "▁"
# A chat template for chat-message datasets on the tiny model: plain role tags.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tokenizer(words: Sequence[str]) -> Any:
    """A ``PreTrainedTokenizerFast`` with ``words`` as single tokens and byte fallback for the rest."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256)), SPACE]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        # A chain of merges builds "▁word" left to right from its characters.
        piece = SPACE
        for ch in word:
            vocab.setdefault(ch, len(vocab))
            if (piece, ch) not in merges:
                merges.append((piece, ch))
            piece += ch
            vocab.setdefault(piece, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first")
    core.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model_dir(cfg: dict[str, Any], words: Sequence[str], cache_dir: str | os.PathLike) -> Path:
    """Build (once) and cache the tiny model + tokenizer; the cache key is the config and the words.

    Returns a directory that ``from_pretrained`` loads offline.
    """
    key = hashlib.sha256(json.dumps({"cfg": cfg, "words": list(words)}, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache_dir) / f"tiny-{key}"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(words)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        num_key_value_heads=cfg["num_heads"],
        max_position_embeddings=cfg["max_position_embeddings"],
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(cfg["init_seed"])
    model = LlamaForCausalLM(config)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, out)  # atomic: a concurrent builder of the same key loses the race harmlessly
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out
