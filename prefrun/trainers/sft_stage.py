"""The SFT stage: fine-tune the base model on the task with TRL's SFTTrainer, cached.

The result is the reference model of preference training. It is cached under a key of everything
that determines it (base weights, data, steps, lr, seed, library versions, recipe version), so a sweep
pays for it once. The cache entry is written to a temporary directory and renamed, so a killed run never
leaves half a model (a failed one removes its temporary; a killed one's is removed at the next start), and a
lock per key makes a second run that needs the same entry wait for the first one's instead of training it too.
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
from prefrun.results.files import temp_path
from prefrun.runtime.locks import locked

# Bump when code that shapes the SFT model changes (its recipe, the formatting of its data): a cache entry
# is only as good as the code that wrote it, and a stale one silently changes every later run's reference.
SFT_RECIPE = 2
LOG_NAME = "sft_metrics.jsonl"  # the SFT's training log, inside the cached model directory


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
    run_dir: str | os.PathLike | None = None,
) -> Path:
    """Fine-tune ``base_model_dir`` on each record's first response; return the cached model directory.

    ``cfg`` holds steps, batch_size, lr, warmup_steps, seed, max_prompt_len, max_response_len. ``run_dir``
    (optional): the SFT's training log goes to its metrics.jsonl with stage "sft", also when cached.
    """
    from prefrun.results.progress import stage_message

    key = sft_cache_key(str(base_model_dir), fingerprint, cfg)
    out = Path(cache_dir) / f"sft-{key}"
    if not (out / "config.json").exists():
        # One run trains a key while the others that need it wait for its entry instead of training it again.
        def waiting(pid: int | None) -> None:
            stage_message(f"SFT reference: waiting for another run (pid {pid or 'unknown'}) computing key {key}")

        with locked(out.with_name(f".{out.name}.lock"), on_wait=waiting):
            if not (out / "config.json").exists():
                stage_message(f"SFT reference: training {cfg['steps']:,} steps (cache key {key})")
                tmp = temp_path(out)
                try:
                    _train_sft(base_model_dir, records, cfg, tmp)
                    try:
                        os.replace(tmp, out)
                    except OSError:  # a run of an earlier version (no lock) published the key first: use theirs
                        if not (out / "config.json").exists():
                            raise
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; a failed run leaves nothing
                _copy_log(out, run_dir)
                return out
    stage_message(f"SFT reference: cached (key {key})")
    _copy_log(out, run_dir)
    return out


def _train_sft(base_model_dir: str, records: list[Record], cfg: dict[str, Any], tmp: Path) -> None:
    """Train the SFT model into ``tmp``: weights, tokenizer and its training log (LOG_NAME)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from prefrun.results.metrics_log import MetricsFile, MetricsFileCallback
    from prefrun.results.progress import attach_progress

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    rows = []
    for record in records:
        tok = tokenize_record(record, tokenizer, cfg["max_prompt_len"], cfg["max_response_len"])
        prompt, response = tok["prompt_ids"], tok["response_ids"][0]
        rows.append({"input_ids": prompt + response, "completion_mask": [0] * len(prompt) + [1] * len(response)})
    args = SFTConfig(
        output_dir=str(tmp / "trainer"),
        max_steps=cfg["steps"],
        per_device_train_batch_size=cfg["batch_size"],
        learning_rate=cfg["lr"],
        lr_scheduler_type="cosine",
        # TRL defaults to gradient checkpointing through the deprecated name (a FutureWarning); the tiny model
        # does not need the memory it saves, and the trained weights are bitwise the same without it.
        activation_checkpointing=False,
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
    tmp.mkdir(parents=True, exist_ok=True)
    log = MetricsFileCallback(MetricsFile(tmp / LOG_NAME), "sft")  # kept with the model, for runs served from cache
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[log]
    )
    attach_progress(trainer, "sft")
    trainer.train()
    trainer.model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)


def _copy_log(model_dir: Path, run_dir: str | os.PathLike | None) -> None:
    """Append the SFT's training log (stage "sft") to the run's metrics.jsonl; rank 0 only."""
    from prefrun.runtime.distributed import is_main_process

    source = model_dir / LOG_NAME
    if run_dir is None or not source.exists() or not is_main_process():
        return
    from prefrun.results.metrics_log import MetricsFile

    target = MetricsFile(Path(run_dir) / "metrics.jsonl")
    target.path.parent.mkdir(parents=True, exist_ok=True)
    if any(row.get("stage") == "sft" for row in target.rows()):  # a resumed run logged it already
        return
    for row in MetricsFile(source).rows():
        target.append(row)
