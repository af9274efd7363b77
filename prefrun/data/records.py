"""The one record shape every objective trains on: a prompt and a scored list of K responses.

    {"prompt": str | list[{"role", "content"}],   # plain text, or chat messages
     "responses": [str, ...],                      # K responses (assistant text)
     "scores": [float, ...],                       # K scores, higher is better; a pair is [1, 0]
     "labels": [bool, ...],                        # optional: unpaired feedback (KTO/BCO), K = 1
     "prompts": [prompt, ...],                     # optional: each response's own prompt (joint
                                                   #   preferences, DOVE); "prompt" is then prompts[0]
     "user": str}                                  # optional: pluralistic data

A record from a chat dataset keeps its prompt as a message list; the tokenizer's chat template
renders it and the response becomes the assistant turn.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

from prefrun.errors import PrefrunError

Record = dict[str, Any]


def make_record(prompt: Any, responses: list[Any], scores: list[float], **extra: Any) -> Record:
    """A record, with its scores as floats; extra keys (labels, user, p_chosen, ...) are kept."""
    return {"prompt": prompt, "responses": list(responses), "scores": [float(s) for s in scores], **extra}


def validate_record(record: Record, where: str) -> None:
    """Check one record's shape; ``where`` names it in the error (e.g. "train.jsonl row 12")."""
    for key in ("prompt", "responses", "scores"):
        if key not in record:
            raise PrefrunError(f"{where}: record has no {key!r} field")
    k = len(record["responses"])
    if k == 0:
        raise PrefrunError(f"{where}: record has no responses")
    if len(record["scores"]) != k:
        raise PrefrunError(f"{where}: {k} responses but {len(record['scores'])} scores")
    for s in record["scores"]:
        if not _finite(s):
            raise PrefrunError(
                f"{where}: a score is {s!r}: missing, NaN or infinite; scores must be finite numbers: "
                "drop the row or fix the score field in the data"
            )
    if "labels" in record and len(record["labels"]) != k:
        raise PrefrunError(f"{where}: {k} responses but {len(record['labels'])} labels")
    if "prompts" in record and len(record["prompts"]) != k:
        raise PrefrunError(f"{where}: {k} responses but {len(record['prompts'])} prompts")


def _finite(score: Any) -> bool:
    try:
        return score is not None and math.isfinite(score)
    except TypeError:
        return False


def prompts_of(record: Record) -> list[Any]:
    """Each response's prompt: its own (joint preferences), or the record's shared prompt."""
    return record.get("prompts") or [record["prompt"]] * len(record["responses"])


def records_fingerprint(records: Iterable[Record]) -> str:
    """sha256 of the records' canonical JSON, ``json.dumps(list(records), sort_keys=True)``, streamed one record at
    a time (no second copy of a large dataset as one string): the content key of caches built from records."""
    digest = hashlib.sha256(b"[")
    for i, record in enumerate(records):
        digest.update((", " if i else "").encode() + json.dumps(record, sort_keys=True).encode())
    digest.update(b"]")
    return digest.hexdigest()
