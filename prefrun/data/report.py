"""The data report: what of a run's training data trains silently wrong, counted, and one log line per finding.

Each check is a small pure function over records or tokenized rows; ``messages`` turns a report into the
lines a user sees (warnings where the data trains differently than it looks):

    identical      records whose responses are all one text (chosen = rejected), dropped by shaping
    batch          fewer training examples than one global batch (train.batch_size, split over the ranks)
    truncation     prompts and responses longer than train.max_prompt_len / max_response_len, and the
                   tokens cut (prompts keep their end, responses their start: ``tokenize.truncate``)
    scores         scores outside the range an objective documents (``score_range`` in its YAML)
    implicit       an implicit prompt (no prompt column) cut at whitespace, because no prompt_marker is
                   set, in a known transcript format: the rows whose reply starts inside the prompt
    mid_word       responses that start inside the prompt's last word (prompt and response join with
                   no space: "... is 4" + "2" tokenizes as "... is 42")
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from prefrun.data.records import Record
from prefrun.data.tokenize import tokenize_full

# Transcript formats whose assistant turn starts after a fixed marker: (format, marker). The marker is what
# dataset.prompt_marker takes; matched without its trailing whitespace, which a whitespace cut leaves out.
TRANSCRIPT_MARKERS: tuple[tuple[str, str], ...] = (
    ("Anthropic HH (\\n\\nHuman: / \\n\\nAssistant:)", "\n\nAssistant:"),
    ("ChatML (<|im_start|>assistant)", "<|im_start|>assistant\n"),
    ("Llama 3 (<|start_header_id|>assistant<|end_header_id|>)", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("Llama 2 / Mistral ([INST] ... [/INST])", "[/INST]"),
    ("Zephyr / Tulu (<|assistant|>)", "<|assistant|>\n"),
    ("Gemma (<start_of_turn>model)", "<start_of_turn>model\n"),
    ("NeMo / HelpSteer (<extra_id_1>Assistant)", "<extra_id_1>Assistant\n"),
    ("Alpaca (### Response:)", "### Response:"),
    ("Vicuna (USER: / ASSISTANT:)", "ASSISTANT:"),
)
_WORD_END = re.compile(r"\w$")
_WORD_START = re.compile(r"^\w")


# ---------------------------------------------------------------- the checks


def batch_check(examples: int, batch_size: int, ranks: int, steps: int) -> dict[str, Any]:
    """Examples against one global batch of ``batch_size`` (each of ``ranks`` processes takes batch_size/ranks).

    ``epochs``: passes over the data that ``steps`` optimizer steps make (a step takes at most every example).
    """
    return {
        "examples": examples,
        "batch_size": batch_size,
        "ranks": ranks,
        "smaller_than_batch": examples < batch_size,
        "epochs": steps * min(batch_size, examples) / examples if examples else None,
    }


def truncation(rows: Iterable[dict], max_prompt_len: int, max_response_len: int) -> dict[str, dict[str, int]]:
    """How many prompts and responses of untruncated rows (``tokenize_full``) exceed their limit, and the tokens
    cut. A row's prompts are its ``prompt_ids``, or each distinct one of ``response_prompt_ids`` (joint data)."""
    out = {
        "prompts": {"cut": 0, "of": 0, "tokens_cut": 0, "max_len": max_prompt_len, "longest": 0},
        "responses": {"cut": 0, "of": 0, "tokens_cut": 0, "max_len": max_response_len, "longest": 0},
    }
    for row in rows:
        prompts = row.get("response_prompt_ids")
        prompts = list({tuple(p): p for p in prompts}.values()) if prompts else [row["prompt_ids"]]
        for kind, seqs in (("prompts", prompts), ("responses", row["response_ids"])):
            limit = max_prompt_len if kind == "prompts" else max_response_len
            for ids in seqs:
                counts = out[kind]
                counts["of"] += 1
                counts["longest"] = max(counts["longest"], len(ids))
                if len(ids) > limit:
                    counts["cut"] += 1
                    counts["tokens_cut"] += len(ids) - limit
    return out


def tokenized_truncation(
    records: Sequence[Record], tokenizer: Any, max_prompt_len: int, max_response_len: int
) -> dict[str, dict[str, int]]:
    """``truncation`` of records as training tokenizes them (``tokenize.tokenize_full``, then cut)."""
    return truncation((tokenize_full(r, tokenizer) for r in records), max_prompt_len, max_response_len)


def score_range_check(records: Sequence[Record], score_range: Sequence[float]) -> dict[str, Any]:
    """The observed score range against the objective's documented [lo, hi]; ``outside``: scores beyond it.

    A score counts as outside when it lies beyond the range by more than 1e-4 of its width (a rounded rescale).
    """
    lo, hi = float(score_range[0]), float(score_range[1])
    scores = [s for r in records for s in r["scores"]]
    slack = 1e-4 * (hi - lo)
    return {
        "expected": [lo, hi],
        "min": min(scores) if scores else None,
        "max": max(scores) if scores else None,
        "outside": sum(1 for s in scores if s < lo - slack or s > hi + slack),
        "of": len(scores),
    }


def transcript_format(prompts: Sequence[Any]) -> tuple[str, str] | None:
    """The known transcript format (format, marker) whose marker most of the text prompts contain, or None."""
    texts = [p for p in prompts if isinstance(p, str)]
    best, best_n = None, 0
    for name, marker in TRANSCRIPT_MARKERS:
        n = sum(1 for t in texts if marker.rstrip() in t)
        if n > best_n:
            best, best_n = (name, marker), n
    return best if best_n * 2 > len(texts) else None


def reply_in_prompt(prompt: Any, marker: str) -> bool:
    """Whether a text prompt goes on past its last ``marker``: the reply's first words were cut into it."""
    if not isinstance(prompt, str):
        return False
    head = marker.rstrip()
    at = prompt.rfind(head)
    return at >= 0 and prompt[at + len(head) :].strip() != ""


def implicit_prompt_check(records: Sequence[Record]) -> dict[str, Any] | None:
    """For implicit prompts cut at whitespace: the transcript format found (None: none known) and how many
    prompts hold the start of their reply."""
    found = transcript_format([r["prompt"] for r in records])
    if found is None:
        return None
    name, marker = found
    return {
        "format": name,
        "marker": marker,
        "reply_in_prompt": sum(1 for r in records if reply_in_prompt(r["prompt"], marker)),
        "of": len(records),
    }


def mid_word(records: Sequence[Record]) -> dict[str, int]:
    """Responses that start with a letter or digit right after a text prompt that ends with one."""
    cut = total = 0
    for r in records:
        prompts = r.get("prompts") or [r["prompt"]] * len(r["responses"])
        for prompt, response in zip(prompts, r["responses"]):
            total += 1
            cut += isinstance(prompt, str) and bool(_WORD_END.search(prompt)) and bool(_WORD_START.match(response))
    return {"responses": cut, "of": total}


# ---------------------------------------------------------------- the lines a user sees


def _pct(n: int, of: int) -> str:
    return f"{n}/{of} ({100 * n / of:.0f}%)" if of else f"{n}/{of}"


def _cli_marker(marker: str) -> str:
    """A prompt_marker override a shell passes through: bash $'...' quoting when it holds newlines."""
    escaped = marker.replace("\\", "\\\\").replace("\n", "\\n")
    if "\n" in marker:
        return f"$'dataset.prompt_marker=\"{escaped}\"'"
    return f"'dataset.prompt_marker=\"{escaped}\"'"


def _scale_fix(check: dict[str, Any]) -> str:
    lo, hi = check["expected"]
    fixes = []
    if check["min"] >= 0 and lo <= 0 < hi and check["max"] > 0:
        fixes.append(f"dataset.score_scale={hi / check['max']:.6g} (every score × it)")
    fixes.append("dataset.score_scale=minmax (each list onto [0, 1])")
    return " or ".join(fixes)


def messages(report: dict[str, Any], dataset: str, objective: str) -> list[tuple[str, str]]:
    """(level, line) pairs, one line per finding: "warning" where the data trains differently than it looks."""
    lines: list[tuple[str, str]] = []
    shaping = report.get("dropped", {})
    records = report.get("records", 0)
    if shaping.get("identical"):
        lines.append(
            (
                "warning",
                f"dataset {dataset}: dropped {shaping['identical']} of {records} records whose responses are all one "
                "text (chosen = rejected): they hold no preference",
            )
        )
    if shaping.get("identical_pairs"):
        lines.append(
            (
                "warning",
                f"dataset {dataset}: dropped {shaping['identical_pairs']} pair(s) whose chosen and rejected are "
                "the same text (lists that repeat a response)",
            )
        )
    batch = report.get("batch")
    if batch and batch["smaller_than_batch"]:
        per_rank = batch["batch_size"] // max(batch["ranks"], 1)
        split = f", {per_rank} per rank × {batch['ranks']} ranks" if batch["ranks"] > 1 else ""
        lines.append(
            (
                "warning",
                f"dataset {dataset} gives {batch['examples']} training example(s), fewer than one batch "
                f"(train.batch_size={batch['batch_size']}{split}): every step sees the same {batch['examples']}, "
                f"not {batch['batch_size']}; lower train.batch_size or add data",
            )
        )
    cut = report.get("truncation")
    if cut:
        p, r = cut["prompts"], cut["responses"]
        line = (
            f"dataset {dataset}: train.max_prompt_len={p['max_len']} cuts {_pct(p['cut'], p['of'])} prompts "
            f"({p['tokens_cut']} tokens from their start, longest {p['longest']}); train.max_response_len="
            f"{r['max_len']} cuts {_pct(r['cut'], r['of'])} responses ({r['tokens_cut']} tokens from their end, "
            f"longest {r['longest']})"
        )
        if p["cut"] or r["cut"]:
            lines.append(("warning", line + "; raise the limits to train on whole texts"))
        else:
            lines.append(("info", line))
    scores = report.get("scores")
    if scores and scores["outside"]:
        lo, hi = scores["expected"]
        lines.append(
            (
                "warning",
                f"objective {objective} expects scores in [{lo:g}, {hi:g}] (objective.score_range) but "
                f"{scores['outside']} of {scores['of']} training scores lie outside "
                f"(min {scores['min']:g}, max {scores['max']:g}); "
                f"rescale with {_scale_fix(scores)}",
            )
        )
    implicit = report.get("implicit_prompt")
    if implicit:
        marker = _cli_marker(implicit["marker"])
        hint = " or use dataset=hh_rlhf" if implicit["marker"] == "\n\nAssistant:" else ""
        level = "warning" if implicit["reply_in_prompt"] else "info"
        lines.append(
            (
                level,
                f"dataset {dataset}: no dataset.prompt_marker, so each implicit prompt ends at the last whitespace "
                f"chosen and rejected share; {implicit['reply_in_prompt']} of {implicit['of']} prompts go on past the "
                f"last assistant marker (the reply's first words became prompt) in these {implicit['format']} "
                f"transcripts; set {marker}{hint}",
            )
        )
    words = report.get("mid_word")
    if words and words["responses"]:
        lines.append(
            (
                "warning",
                f"dataset {dataset}: {words['responses']} of {words['of']} responses start inside the prompt's last "
                "word (the prompt ends in a letter or digit and the response begins with one: a text prompt and its "
                "response are tokenized as one text, with nothing between); check where prompts end "
                "(dataset.prompt_marker, dataset.fields.prompt)",
            )
        )
    return lines


# ---------------------------------------------------------------- one report per run


def implicit_whitespace_prompt(dataset_cfg: Any) -> bool:
    """Whether the loader cuts each prompt at whitespace (``loaders``' implicit prompt rule): a loaded pairwise
    dataset with no prompt column mapped and no dataset.prompt_marker."""
    fields = dataset_cfg.get("fields") or {}
    return (
        not dataset_cfg.get("synthetic")
        and (dataset_cfg.get("schema") or "pairwise") == "pairwise"
        and not fields.get("prompt")
        and not dataset_cfg.get("prompt_marker")
    )


def data_report(
    records: Sequence[Record],
    dropped: dict[str, int],
    loaded: int,
    tokenizer: Any,
    *,
    max_prompt_len: int,
    max_response_len: int,
    batch_size: int,
    ranks: int,
    steps: int,
    score_range: Sequence[float] | None = None,
    implicit_prompt: bool = False,
) -> dict[str, Any]:
    """The report of the records a run trains on (``dropped``: shaping's counts; ``loaded``: records before it)."""
    report: dict[str, Any] = {
        "records": loaded,
        "examples": len(records),
        "dropped": dict(dropped),
        "batch": batch_check(len(records), batch_size, ranks, steps),
        "truncation": tokenized_truncation(records, tokenizer, max_prompt_len, max_response_len),
        "mid_word": mid_word(records),
    }
    if score_range is not None:
        report["scores"] = score_range_check(records, score_range)
    if implicit_prompt:
        report["implicit_prompt"] = implicit_prompt_check(records)
    return report


def log_report(report: dict[str, Any], dataset: str, objective: str, logger: Any) -> None:
    """Each line of ``messages`` through ``logger`` at its level."""
    for level, line in messages(report, dataset, objective):
        getattr(logger, level)(line)
