"""Loaders: map the rows of a public preference dataset onto records (see records.py).

A dataset config (conf/dataset/<name>.yaml) says where the rows come from (`path`, else `hub_id`)
and which schema and columns (`schema`, `fields`) they follow. For example hh-rlhf:

    schema: pairwise
    fields: {chosen: chosen, rejected: rejected}      # no prompt column: the prompt is implicit
    prompt_marker: "\\n\\nAssistant:"

    {"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: No."}
    -> {"prompt": "\\n\\nHuman: Hi\\n\\nAssistant:", "responses": [" Hello!", " No."], "scores": [1.0, 0.0]}

Schemas (`dataset.schema`) and the fields each one maps (`dataset.fields.<field>`):

    pairwise          prompt, chosen, rejected, score_chosen, score_rejected    TRL preference format
                      (+ prompt_rejected: joint preferences, DOVE's prompt_chosen/prompt_rejected)
    list              prompt, responses (a list column), text, score | rank     UltraFeedback, Nectar
    unpaired          prompt, completion, label                                 TRL unpaired format (KTO)
    scored_responses  prompt, responses, scores (lists of columns)              SHP
    grouped           prompt, response, score: one response per row,            HelpSteer2
                      rows with the same prompt become one record
    choice            prompt, responses, text, choice (+ turn): the preferred   PKU-SafeRLHF, TL;DR,
                      response's index or name, or a tie (see choice.py)        MT-Bench, Chatbot Arena

Rules:
- Text or chat. A prompt or response is text or chat messages ({role, content}, or ShareGPT
  {from, value} with human -> user, gpt -> assistant). With messages, everything before the last
  message is the prompt (kept as a message list) and the last message's content is the response; a
  mapped prompt column is used only when the messages hold the answer alone.
- Implicit prompt (pairwise text, `fields.prompt` null): the text chosen and rejected share, cut
  just after the last `prompt_marker` in it (hh-rlhf: "\\n\\nAssistant:"), or at its last whitespace
  when no marker is set; each response keeps the rest (with its leading space).
- Scores are floats, higher is better; numeric strings are read as numbers; a missing, None,
  non-numeric or non-finite score (NaN, Infinity, -Infinity, "inf", "nan") is an error that names the
  file, row, line and field. A `score` may be a dotted path into nested fields
  ("annotations.helpfulness.Rating") or a {column: weight} mapping (a weighted sum). A pair without
  mapped scores gets [1, 0]. Ties are kept as the data has them; `to_pairs` drops them.
- Ranks (rank 1 = best) are used only for their order: see `ranks_to_scores`.
- Joint preferences (pairwise, `fields.prompt_rejected` set): the rejected response answers its own
  prompt, so each record carries `prompts` = [prompt, prompt_rejected] (only `objective=jpo` trains on
  them). With chat messages the two histories may then differ.
- `fields.user` (an annotator, worker or judge id), in every schema but grouped, becomes each
  record's `user` (pluralistic data, reward models). `fields.prompt` may list several fields: the
  first one present and set is the prompt (summarize_from_feedback: a post, else an article).
- Files are read a line at a time (JSONL) and must be UTF-8 (see reading.py).
- `k` keeps the first k responses in the data's order; records with fewer than `min_k` responses
  are dropped and counted in the log; `max_rows` keeps at most that many records.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.data import choice as choice_schema
from prefrun.data import fields as get
from prefrun.data.fields import columns as _columns_of
from prefrun.data.fields import label as _label
from prefrun.data.fields import messages as _messages
from prefrun.data.fields import number as _number
from prefrun.data.fields import prompt as _prompt
from prefrun.data.fields import ranks_to_scores
from prefrun.data.fields import response as _response
from prefrun.data.reading import read_rows
from prefrun.data.records import Record, make_record, validate_record
from prefrun.errors import PrefrunError

__all__ = ["SCHEMA_FIELDS", "DatasetSpec", "load_records", "ranks_to_scores"]

log = logging.getLogger(__name__)

SCHEMA_FIELDS: dict[str, tuple[str, ...]] = {
    "pairwise": ("prompt", "chosen", "rejected", "score_chosen", "score_rejected", "prompt_rejected"),
    "list": ("prompt", "responses", "text", "score", "rank"),
    "unpaired": ("prompt", "completion", "label"),
    "scored_responses": ("prompt", "responses", "scores"),
    "grouped": ("prompt", "response", "score"),
    "choice": ("prompt", "responses", "text", "choice", "turn"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "pairwise": ("chosen", "rejected"),
    "list": ("prompt", "responses"),
    "unpaired": ("completion", "label"),
    "scored_responses": ("prompt", "responses", "scores"),
    "grouped": ("prompt", "response", "score"),
    "choice": ("responses", "choice"),
}
# fields that may hold more than one name: lists of columns, or {column: weight} for a weighted sum
_MAPPING_KINDS: dict[str, type] = {"responses": list, "scores": list, "score": dict}
_MAPPING_KINDS |= {"score_chosen": dict, "score_rejected": dict, "choice": dict, "prompt": list}
_MAPPING_HINTS = {"responses": " or a list of them", "scores": " or a list of them"}
_MAPPING_HINTS |= {"choice": " or a {preference label: field} mapping", "prompt": " or a list of them"}
_MAPPING_HINTS |= {k: " or a {name: weight} mapping" for k in ("score", "score_chosen", "score_rejected")}
# per-record inputs some objectives need, mappable in every schema but `grouped`: p_chosen (irepo: the
# empirical probability that the first response is preferred), baseline_logps (poft: per response, the
# length-normalised log-prob under frozen aligned models; a list of M per response is averaged), user
# (the annotator: pluralistic data and reward models)
_EXTRA_FIELDS = ("p_chosen", "baseline_logps", "user")
_ALL_FIELDS = sorted({name for names in SCHEMA_FIELDS.values() for name in names} | set(_EXTRA_FIELDS))

Row = dict[str, Any]
Rows = Iterator[tuple[str, Row]]  # (where the row is, for errors; the row)


# ---------------------------------------------------------------- the dataset config


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset config, checked: the keys of conf/dataset/<name>.yaml (see conf/dataset/local.yaml)."""

    name: str
    schema: str
    fields: dict[str, Any]
    hub_id: str | None = None
    subset: str | None = None
    data_dir: str | None = None
    path: str | None = None
    splits: dict[str, Any] | None = None
    prompt_marker: str | None = None
    k: int | None = None
    min_k: int = 1
    max_rows: int | None = None
    choice: choice_schema.ChoiceSettings | None = None  # schema choice: preference, names, ties

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DatasetSpec:
        raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        schema = raw.get("schema") or "pairwise"
        if schema not in SCHEMA_FIELDS:
            raise PrefrunError(f"dataset.schema={schema!r} is unknown; use one of {', '.join(SCHEMA_FIELDS)}")
        fields = {key: value for key, value in (raw.get("fields") or {}).items() if value is not None}
        _check_fields(schema, fields)
        spec = cls(
            name=str(raw.get("name") or "dataset"),
            schema=schema,
            fields=fields,
            **{key: raw.get(key) for key in ("hub_id", "subset", "data_dir", "path", "splits")},
            prompt_marker=raw.get("prompt_marker"),
            k=_count(raw, "k", None),
            min_k=_count(raw, "min_k", 1),
            max_rows=_count(raw, "max_rows", None),
            choice=choice_schema.settings(fields, raw) if schema == "choice" else None,
        )
        if schema != "choice":
            for key in _CHOICE_KEYS:
                if raw.get(key) not in (None, *_CHOICE_DEFAULTS.get(key, ())):
                    raise PrefrunError(
                        f"dataset.{key} is set but schema {schema!r} does not use it (only schema choice does); "
                        "set it to null or use dataset.schema=choice"
                    )
        if not spec.path and not spec.hub_id:
            raise PrefrunError(f"dataset {spec.name}: set dataset.path to a local file (or dataset.hub_id)")
        if spec.k is not None and spec.min_k > spec.k:
            raise PrefrunError(f"dataset.min_k={spec.min_k} exceeds dataset.k={spec.k}; lower min_k or raise k")
        return spec


_CHOICE_KEYS = ("preference", "choice_names", "ties", "differing_histories")
# the values local.yaml gives them, accepted under every schema
_CHOICE_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "ties": (list(choice_schema.DEFAULT_TIES),),
    "differing_histories": ("drop",),
}


def _check_fields(schema: str, fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        if key not in _ALL_FIELDS:
            raise PrefrunError(f"dataset.fields.{key} is not a field; fields are {', '.join(_ALL_FIELDS)}")
        if not isinstance(value, str | _MAPPING_KINDS.get(key, str)):
            raise PrefrunError(f"dataset.fields.{key}={value!r} must be a field name{_MAPPING_HINTS.get(key, '')}")
        if key not in SCHEMA_FIELDS[schema] and not (key in _EXTRA_FIELDS and schema != "grouped"):
            raise PrefrunError(
                f"dataset.fields.{key} is set but schema {schema!r} does not use it "
                f"(its fields: {', '.join(SCHEMA_FIELDS[schema])}); set it to null or change dataset.schema"
            )
    for key in _REQUIRED[schema]:
        if key not in fields:
            raise PrefrunError(f"dataset.fields.{key} is not set; schema {schema!r} needs it (the column name)")
    if schema == "pairwise" and ("score_chosen" in fields) != ("score_rejected" in fields):
        raise PrefrunError("set both dataset.fields.score_chosen and dataset.fields.score_rejected, or neither")
    if schema == "list" and ("score" in fields) == ("rank" in fields):
        raise PrefrunError("schema 'list' needs exactly one of dataset.fields.score and dataset.fields.rank")


def _count(raw: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PrefrunError(f"dataset.{key}={value!r} must be a positive integer (or null)")
    return value


# ---------------------------------------------------------------- entry point


def load_records(cfg: Mapping[str, Any], split: str) -> list[Record]:
    """The records of one split ("train", "eval", or a split name of the data) of a dataset config.

    With prefs.csv holding the columns q,a,b and a row "2+2?,4,5":

        load_records({"path": "prefs.csv", "fields": {"prompt": "q", "chosen": "a", "rejected": "b"}}, "eval")
        -> [{"prompt": "2+2?", "responses": ["4", "5"], "scores": [1.0, 0.0]}]
    """
    spec = DatasetSpec.from_config(cfg)
    source, rows = _open_rows(spec, split)
    counts = choice_schema.ChoiceCounts()
    if spec.schema == "grouped":
        mapped: Iterable[Record] = _grouped(rows, spec)
    elif spec.choice is not None:
        mapped = (
            _with_extras(record, row, where, spec)
            for where, row, record in choice_schema.choice_records(rows, spec.choice, counts)
        )
    else:
        mapper = _ROW_MAPPERS[spec.schema]
        mapped = (_with_extras(mapper(row, where, spec), row, where, spec) for where, row in rows)
    records: list[Record] = []
    short = 0
    for record in mapped:
        if spec.k is not None:
            for key in ("responses", "scores", "prompts"):
                if key in record:
                    record[key] = record[key][: spec.k]
        if len(record["responses"]) < spec.min_k:
            short += 1
            continue
        validate_record(record, f"{source} record {len(records)}")
        records.append(record)
        if spec.max_rows is not None and len(records) >= spec.max_rows:
            break
    if short:
        log.info("%s: dropped %d prompts with fewer than min_k=%d responses", source, short, spec.min_k)
    _log_choice_counts(source, counts)
    if not records:
        differing = (
            f", {counts.differing_histories} dropped whose conversations differ before the judged answer "
            "(dataset.differing_histories=joint keeps them for objective=jpo)"
            if counts.differing_histories
            else ""
        )
        raise PrefrunError(
            f"{source}: no records after loading ({short} dropped with fewer than dataset.min_k={spec.min_k} "
            f"responses{differing}); check the file, dataset.splits and dataset.min_k"
        )
    return records


def _log_choice_counts(source: str, counts: choice_schema.ChoiceCounts) -> None:
    """Say how many choices were ties (kept: pairwise objectives drop them) and how many rows were dropped."""
    total = sum(counts.by_label.values())
    if counts.ties:
        log.warning(
            "%s: %d of %d choices are ties, kept with equal scores (pairwise objectives drop them)",
            source,
            counts.ties,
            total,
        )
    if counts.differing_histories:
        log.warning(
            "%s: dropped %d rows whose two conversations differ before the judged answer (a later turn after "
            "each model's own earlier answers); dataset.differing_histories=joint keeps them for objective=jpo",
            source,
            counts.differing_histories,
        )


def _with_extras(record: Record, row: Row, where: str, spec: DatasetSpec) -> Record:
    """Copy the mapped per-record inputs (p_chosen, baseline_logps as numbers, user as text) onto the record."""
    if "user" in spec.fields:
        record["user"] = str(_field(row, spec, "user", where))
    if "p_chosen" in spec.fields:
        record["p_chosen"] = _number(_field(row, spec, "p_chosen", where), where, "p_chosen")
    if "baseline_logps" in spec.fields:
        values = _field(row, spec, "baseline_logps", where)
        values = values if isinstance(values, list | tuple) else [values]
        per_response = [
            sum(_number(x, where, "baseline_logps") for x in v) / len(v)
            if isinstance(v, list | tuple) and v
            else _number(v, where, "baseline_logps")
            for v in values
        ]
        if len(per_response) != len(record["responses"]):
            raise PrefrunError(
                f"{where}: {len(per_response)} baseline_logps for {len(record['responses'])} "
                "responses; give one per response (dataset.fields.baseline_logps)"
            )
        record["baseline_logps"] = per_response
    return record


# ---------------------------------------------------------------- reading rows


def _open_rows(spec: DatasetSpec, split: str) -> tuple[str, Rows]:
    """Where the rows come from (for messages) and the rows: a local file if `path` is set, else the hub."""
    splits = spec.splits or {}
    if split in splits and splits[split] is None:
        raise PrefrunError(
            f"dataset {spec.name} has no {split!r} split (dataset.splits.{split} is null); "
            f"set dataset.splits.{split} to one of the data's splits, or hold out part of train"
        )
    split_name = str(splits.get(split, split))
    if spec.path:
        path = Path(spec.path.replace("{split}", split_name)).expanduser()
        return str(path), _file_rows(path)
    return f"{spec.hub_id} [{split_name}]", _hub_rows(spec, split_name)


def _file_rows(path: Path) -> Rows:
    return ((f"{path} row {i}{line}", _as_row(row, f"{path} row {i}")) for i, (line, row) in enumerate(read_rows(path)))


def _hub_rows(spec: DatasetSpec, split_name: str) -> Rows:
    import datasets

    try:
        ds = datasets.load_dataset(spec.hub_id, name=spec.subset, data_dir=spec.data_dir, split=split_name)
    except Exception as e:  # network, gating, bad id or split: all reach the user as one line
        reason = (str(e).strip().splitlines() or [""])[0]
        raise PrefrunError(
            f"could not load {spec.hub_id} split {split_name!r} from the hub ({type(e).__name__}: {reason}); "
            "check dataset.hub_id/subset/splits, log in for gated data, or set dataset.path to a local file"
        ) from e
    return ((f"{spec.hub_id} [{split_name}] row {i}", _as_row(row, spec.hub_id)) for i, row in enumerate(ds))


def _as_row(row: Any, where: str) -> Row:
    if not isinstance(row, Mapping):
        raise PrefrunError(f"{where}: a row must be an object with named fields, not {type(row).__name__}")
    return dict(row)


def _field(obj: Mapping[str, Any], spec: DatasetSpec, name: str, where: str) -> Any:
    return get.field(obj, spec.fields, name, where)


def _score(obj: Mapping[str, Any], spec: DatasetSpec, name: str, where: str) -> float:
    return get.score(obj, spec.fields, name, where)


def _shared_prefix_prompt(chosen: str, rejected: str, marker: str | None, where: str) -> str:
    """The implicit prompt of two texts: their shared prefix, cut after its last marker (or whitespace)."""
    shared = os.path.commonprefix([chosen, rejected])
    if marker:
        cut = shared.rfind(marker)
        if cut < 0:
            raise PrefrunError(
                f"{where}: chosen and rejected share no {marker!r} (dataset.prompt_marker), so the prompt "
                "cannot be found; fix the marker or map dataset.fields.prompt"
            )
        return shared[: cut + len(marker)]
    cut = max((i for i, ch in enumerate(shared) if ch.isspace()), default=0)
    if cut == 0:
        raise PrefrunError(
            f"{where}: chosen and rejected share no prompt text; map dataset.fields.prompt to its column"
        )
    return shared[:cut]


# ---------------------------------------------------------------- one mapper per schema


def _pairwise(row: Row, where: str, spec: DatasetSpec) -> Record:
    chosen, rejected = _field(row, spec, "chosen", where), _field(row, spec, "rejected", where)
    prompt = _field(row, spec, "prompt", where) if "prompt" in spec.fields else None
    joint = "prompt_rejected" in spec.fields
    prompt_rejected = _field(row, spec, "prompt_rejected", where) if joint else None
    chosen_msgs, rejected_msgs = _messages(chosen, where, "chosen"), _messages(rejected, where, "rejected")
    if (chosen_msgs is None) != (rejected_msgs is None):
        raise PrefrunError(f"{where}: chosen and rejected must both be text or both be chat messages")
    if chosen_msgs is None or rejected_msgs is None:
        if joint:
            prompt = _mapped_prompt(prompt, where)
        elif prompt is None:
            prompt = _shared_prefix_prompt(chosen, rejected, spec.prompt_marker, where)
            chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
    else:
        history = chosen_msgs[:-1]
        if history != rejected_msgs[:-1] and not joint:
            raise PrefrunError(
                f"{where}: chosen and rejected differ before their last message; prefrun compares one "
                "final answer to the same conversation (map dataset.fields.prompt_rejected for joint preferences)"
            )
        chosen, rejected = chosen_msgs[-1]["content"], rejected_msgs[-1]["content"]
        prompt = history or _mapped_prompt(prompt, where)
        prompt_rejected = rejected_msgs[:-1] or prompt_rejected
    scores = [1.0, 0.0]
    if "score_chosen" in spec.fields:
        scores = [_score(row, spec, "score_chosen", where), _score(row, spec, "score_rejected", where)]
    if joint:
        prompts = [_prompt(prompt, where), _prompt(_mapped_prompt(prompt_rejected, where), where)]
        return make_record(prompts[0], [chosen, rejected], scores, prompts=prompts)
    return make_record(_prompt(prompt, where), [chosen, rejected], scores)


def _mapped_prompt(prompt: Any, where: str) -> Any:
    if prompt is None:
        raise PrefrunError(
            f"{where}: the messages hold only the answer and no prompt is mapped; set dataset.fields.prompt"
        )
    return prompt


def _list(row: Row, where: str, spec: DatasetSpec) -> Record:
    prompt = _prompt(_field(row, spec, "prompt", where), where)
    items = _field(row, spec, "responses", where)
    if not isinstance(items, list | tuple):
        raise PrefrunError(f"{where}: field {spec.fields['responses']!r} (dataset.fields.responses) is not a list")
    key = "score" if "score" in spec.fields else "rank"
    responses, values = [], []
    for j, item in enumerate(items):
        at = f"{where} {spec.fields['responses']}[{j}]"
        text = _field(item, spec, "text", at) if "text" in spec.fields else item
        responses.append(_response(text, at, "the response"))
        values.append(_score(item, spec, key, at))
    return make_record(prompt, responses, values if key == "score" else ranks_to_scores(values))


def _unpaired(row: Row, where: str, spec: DatasetSpec) -> Record:
    completion = _field(row, spec, "completion", where)
    label = _label(_field(row, spec, "label", where), where)
    prompt = _field(row, spec, "prompt", where) if "prompt" in spec.fields else None
    messages = _messages(completion, where, "the completion")
    if messages is None:
        answer = completion
        prompt = _mapped_prompt(prompt, where)
    else:
        answer = messages[-1]["content"]
        prompt = messages[:-1] or _mapped_prompt(prompt, where)
    return make_record(_prompt(prompt, where), [answer], [1.0 if label else 0.0], labels=[label])


def _scored_responses(row: Row, where: str, spec: DatasetSpec) -> Record:
    prompt = _prompt(_field(row, spec, "prompt", where), where)
    responses = [_response(v, where, "a response") for v in _columns_of(row, spec.fields, "responses", where)]
    scores = [_number(v, where, "a score") for v in _columns_of(row, spec.fields, "scores", where)]
    if len(responses) != len(scores):
        raise PrefrunError(f"{where}: {len(responses)} responses but {len(scores)} scores; check dataset.fields")
    return make_record(prompt, responses, scores)


def _grouped(rows: Rows, spec: DatasetSpec) -> Iterator[Record]:
    """One record per distinct prompt, its responses in the order the rows come."""
    groups: dict[str, Record] = {}
    for where, row in rows:
        prompt = _prompt(_field(row, spec, "prompt", where), where)
        key = json.dumps(prompt, ensure_ascii=False, sort_keys=True)
        record = groups.setdefault(key, make_record(prompt, [], []))
        record["responses"].append(_response(_field(row, spec, "response", where), where, "the response"))
        record["scores"].append(_score(row, spec, "score", where))
    yield from groups.values()


_ROW_MAPPERS: dict[str, Callable[[Row, str, DatasetSpec], Record]] = {
    "pairwise": _pairwise,
    "list": _list,
    "unpaired": _unpaired,
    "scored_responses": _scored_responses,
}
