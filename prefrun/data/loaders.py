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

Rules:
- Text or chat. A prompt or response is text or chat messages ({role, content}, or ShareGPT
  {from, value} with human -> user, gpt -> assistant). With messages, everything before the last
  message is the prompt (kept as a message list) and the last message's content is the response; a
  mapped prompt column is used only when the messages hold the answer alone.
- Implicit prompt (pairwise text, `fields.prompt` null): the text chosen and rejected share, cut
  just after the last `prompt_marker` in it (hh-rlhf: "\\n\\nAssistant:"), or at its last whitespace
  when no marker is set; each response keeps the rest (with its leading space).
- Scores are floats, higher is better; numeric strings are read as numbers; a missing, None, NaN or
  non-numeric score is an error that names the row. A `score` may be a dotted path into nested
  fields ("annotations.helpfulness.Rating") or a {column: weight} mapping (a weighted sum). A pair
  without mapped scores gets [1, 0]. Ties are kept as the data has them; `to_pairs` drops them.
- Ranks (rank 1 = best) are used only for their order: see `ranks_to_scores`.
- Joint preferences (pairwise, `fields.prompt_rejected` set): the rejected response answers its own
  prompt, so each record carries `prompts` = [prompt, prompt_rejected] (only `objective=jpo` trains on
  them). With chat messages the two histories may then differ.
- `k` keeps the first k responses in the data's order; records with fewer than `min_k` responses
  are dropped and counted in the log; `max_rows` keeps at most that many records.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.data.records import Record, make_record, validate_record
from prefrun.errors import PrefrunError

log = logging.getLogger(__name__)

SCHEMA_FIELDS: dict[str, tuple[str, ...]] = {
    "pairwise": ("prompt", "chosen", "rejected", "score_chosen", "score_rejected", "prompt_rejected"),
    "list": ("prompt", "responses", "text", "score", "rank"),
    "unpaired": ("prompt", "completion", "label"),
    "scored_responses": ("prompt", "responses", "scores"),
    "grouped": ("prompt", "response", "score"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "pairwise": ("chosen", "rejected"),
    "list": ("prompt", "responses"),
    "unpaired": ("completion", "label"),
    "scored_responses": ("prompt", "responses", "scores"),
    "grouped": ("prompt", "response", "score"),
}
# fields that may hold more than one name: lists of columns, or {column: weight} for a weighted sum
_MAPPING_KINDS: dict[str, type] = {"responses": list, "scores": list, "score": dict}
_MAPPING_KINDS |= {"score_chosen": dict, "score_rejected": dict}
_MAPPING_HINTS = {"responses": " or a list of them", "scores": " or a list of them"}
_MAPPING_HINTS |= {k: " or a {name: weight} mapping" for k in ("score", "score_chosen", "score_rejected")}
# per-record inputs some objectives need, mappable in every schema but `grouped`: p_chosen (irepo: the
# empirical probability that the first response is preferred), baseline_logps (poft: per response, the
# length-normalised log-prob under frozen aligned models; a list of M per response is averaged)
_EXTRA_FIELDS = ("p_chosen", "baseline_logps")
_ALL_FIELDS = sorted({name for names in SCHEMA_FIELDS.values() for name in names} | set(_EXTRA_FIELDS))
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}

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
        )
        if not spec.path and not spec.hub_id:
            raise PrefrunError(f"dataset {spec.name}: set dataset.path to a local file (or dataset.hub_id)")
        if spec.k is not None and spec.min_k > spec.k:
            raise PrefrunError(f"dataset.min_k={spec.min_k} exceeds dataset.k={spec.k}; lower min_k or raise k")
        return spec


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
    if spec.schema == "grouped":
        mapped: Iterable[Record] = _grouped(rows, spec)
    else:
        mapper = _ROW_MAPPERS[spec.schema]
        mapped = (_with_extras(mapper(row, where, spec), row, where, spec) for where, row in rows)
    records: list[Record] = []
    short = 0
    for record in mapped:
        if spec.k is not None:
            record["responses"] = record["responses"][: spec.k]
            record["scores"] = record["scores"][: spec.k]
        if len(record["responses"]) < spec.min_k:
            short += 1
            continue
        validate_record(record, f"{source} record {len(records)}")
        records.append(record)
        if spec.max_rows is not None and len(records) >= spec.max_rows:
            break
    if short:
        log.info("%s: dropped %d prompts with fewer than min_k=%d responses", source, short, spec.min_k)
    if not records:
        raise PrefrunError(
            f"{source}: no records after loading ({short} dropped with fewer than dataset.min_k={spec.min_k} "
            "responses); check the file, dataset.splits and dataset.min_k"
        )
    return records


def _with_extras(record: Record, row: Row, where: str, spec: DatasetSpec) -> Record:
    """Copy the mapped per-record inputs (p_chosen, baseline_logps) onto the record, as numbers."""
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
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise PrefrunError(f"dataset.path {path}: unknown extension {path.suffix!r}; use one of {', '.join(_READERS)}")
    if not path.is_file():
        raise PrefrunError(
            f"dataset.path {path}: no such file (resolved to {path.absolute()}); "
            "set dataset.path to an existing file (absolute, or relative to the working directory)"
        )
    return ((f"{path} row {i}{line}", _as_row(row, f"{path} row {i}")) for i, (line, row) in enumerate(reader(path)))


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f" (line {n})", json.loads(line)
            except json.JSONDecodeError as e:
                raise PrefrunError(f"{path} line {n}: not valid JSON ({e.msg}); each line holds one object") from None


def _read_json(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise PrefrunError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list):
        raise PrefrunError(f"{path}: a .json dataset must be a list of row objects (or use .jsonl)")
    return (("", row) for row in data)


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    return (("", row) for row in pq.read_table(path).to_pylist())


def _read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    import pandas as pd

    return ((f" (line {i + 2})", row) for i, row in enumerate(pd.read_csv(path).to_dict("records")))


_READERS: dict[str, Callable[[Path], Iterator[tuple[str, Any]]]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".parquet": _read_parquet,
    ".csv": _read_csv,
}


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


# ---------------------------------------------------------------- field access


def _value(obj: Mapping[str, Any], key: str, where: str, yaml_key: str) -> Any:
    """obj[key] (or a dotted path into nested fields); an error naming the row and the YAML key if absent."""
    if not isinstance(obj, Mapping):
        raise PrefrunError(f"{where}: expected an object with a field {key!r} (dataset.{yaml_key}), got {obj!r:.60}")
    if key in obj:
        value = obj[key]
    else:
        value = obj
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise PrefrunError(
                    f"{where}: no field {key!r} (it has: {', '.join(map(str, obj))}); "
                    f"set dataset.{yaml_key} to the name of the field that holds it"
                )
            value = value[part]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise PrefrunError(
            f"{where}: field {key!r} (dataset.{yaml_key}) is empty (None/NaN); fill it in or drop the row"
        )
    return value


def _field(obj: Mapping[str, Any], spec: DatasetSpec, name: str, where: str) -> Any:
    return _value(obj, spec.fields[name], where, f"fields.{name}")


def _number(value: Any, where: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PrefrunError(f"{where}: {what} is {value!r}, not a number; fix the data or map another field") from None
    if math.isnan(number):
        raise PrefrunError(f"{where}: {what} is NaN; fill it in or drop the row")
    return number


def _score(obj: Mapping[str, Any], spec: DatasetSpec, name: str, where: str) -> float:
    """The score field `name` of obj: one column, or a {column: weight} mapping summed."""
    mapping = spec.fields[name]
    if isinstance(mapping, Mapping):
        return sum(
            float(w) * _number(_value(obj, col, where, f"fields.{name}.{col}"), where, f"field {col!r}")
            for col, w in mapping.items()
        )
    return _number(_field(obj, spec, name, where), where, f"field {mapping!r} (dataset.fields.{name})")


def _label(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise PrefrunError(f"{where}: label is {value!r}; a label must be true/false (or 1/0)")


def ranks_to_scores(ranks: list[float]) -> list[float]:
    """Scores from ranks (1 = best), using only their order: the number of distinct ranks worse than each.

    A clean ranking 1..K gives K - rank; gaps are ignored and equal ranks are ties:

    >>> ranks_to_scores([1, 2, 3])
    [2.0, 1.0, 0.0]
    >>> ranks_to_scores([3, 1, 7])
    [1.0, 2.0, 0.0]
    >>> ranks_to_scores([1, 2, 2, 4])
    [2.0, 1.0, 1.0, 0.0]
    """
    levels = sorted(set(ranks))
    return [float(len(levels) - 1 - levels.index(r)) for r in ranks]


# ---------------------------------------------------------------- text and chat messages


def _message(m: Any, where: str, what: str) -> dict[str, Any]:
    if isinstance(m, Mapping):
        if "role" in m and "content" in m:
            return {"role": str(m["role"]), "content": m["content"]}
        if "from" in m and "value" in m:
            return {"role": _SHAREGPT_ROLES.get(m["from"], str(m["from"])), "content": m["value"]}
    raise PrefrunError(f"{where}: {what} holds {m!r:.60}, not a chat message ({{role, content}} or {{from, value}})")


def _messages(value: Any, where: str, what: str) -> list[dict[str, Any]] | None:
    """value as a list of chat messages, or None when it is text."""
    if isinstance(value, str):
        return None
    if isinstance(value, Mapping):
        return [_message(value, where, what)]
    if isinstance(value, list | tuple) and value:
        return [_message(m, where, what) for m in value]
    raise PrefrunError(f"{where}: {what} is {value!r:.60}, neither text nor a list of chat messages")


def _prompt(value: Any, where: str) -> str | list[dict[str, Any]]:
    messages = _messages(value, where, "the prompt")
    return value if messages is None else messages


def _response(value: Any, where: str, what: str) -> str:
    """A response's text: the text itself, or the content of the last of its chat messages."""
    messages = _messages(value, where, what)
    return value if messages is None else messages[-1]["content"]


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
    responses = [_response(v, where, "a response") for v in _columns(row, spec, "responses", where)]
    scores = [_number(v, where, "a score") for v in _columns(row, spec, "scores", where)]
    if len(responses) != len(scores):
        raise PrefrunError(f"{where}: {len(responses)} responses but {len(scores)} scores; check dataset.fields")
    return make_record(prompt, responses, scores)


def _columns(row: Row, spec: DatasetSpec, name: str, where: str) -> list[Any]:
    """The values of a list of columns, or of one column that holds a list."""
    columns = spec.fields[name]
    if isinstance(columns, str):
        values = _field(row, spec, name, where)
        if not isinstance(values, list | tuple):
            raise PrefrunError(f"{where}: field {columns!r} (dataset.fields.{name}) is not a list")
        return list(values)
    return [_value(row, col, where, f"fields.{name}") for col in columns]


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
