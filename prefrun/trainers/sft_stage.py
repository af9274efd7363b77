"""The SFT stage: fine-tune the base model on the task with TRL's SFTTrainer, cached.

The result is the reference model of preference training. It is cached under a key of everything
that determines it (base weights, data, steps, lr, seed, library versions, recipe version), so a sweep
pays for it once; the cache entry is
written to a temporary directory and renamed, so a killed or concurrent run never sees half a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from prefrun.data.records import Record
from prefrun.data.tokenize import tokenize_record

# Bump when code that shapes the SFT model changes (its recipe, the formatting of its data): a cache entry
# is only as good as the code that wrote it, and a stale one silently changes every later run's reference.
SFT_RECIPE = 2


def sft_cache_key(base_model: str, records_fingerprint: str, cfg: dict[str, Any]) -> str:
    from prefrun.trainers.ref_cache import model_fingerprint, stack_fingerprint

    blob = {
        "recipe": SFT_RECIPE,
        "stack": stack_fingerprint(),
        "model": model_fingerprint(base_model),  # the weights, not where they lie
        "data": records_fingerprint,
        "cfg": cfg,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def run_sft(
    base_model_dir: str,
    records: list[Record],
    cfg: dict[str, Any],
    cache_dir: str | os.PathLike,
    fingerprint: str,
) -> Path:
    """Fine-tune ``base_model_dir`` on each record's first response; return the cached model directory.

    ``cfg`` holds steps, batch_size, lr, warmup_steps, seed, max_prompt_len, max_response_len.
    """
    out = Path(cache_dir) / f"sft-{sft_cache_key(str(base_model_dir), fingerprint, cfg)}"
    if (out / "config.json").exists():
        return out
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    rows = []
    for record in records:
        tok = tokenize_record(record, tokenizer, cfg["max_prompt_len"], cfg["max_response_len"])
        prompt, response = tok["prompt_ids"], tok["response_ids"][0]
        rows.append({"input_ids": prompt + response, "completion_mask": [0] * len(prompt) + [1] * len(response)})
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    args = SFTConfig(
        output_dir=str(tmp / "trainer"),
        max_steps=cfg["steps"],
        per_device_train_batch_size=cfg["batch_size"],
        learning_rate=cfg["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=cfg["warmup_steps"],
        logging_steps=max(1, cfg["steps"] // 10),
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        bf16=False,  # TRL turns bf16 autocast on even with use_cpu; the tiny model trains in fp32
        completion_only_loss=True,
        max_length=None,
        seed=cfg["seed"],
        disable_tqdm=True,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    trainer.model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another run of the same key finished first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out
