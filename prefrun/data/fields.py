"""Reading one field of a row: dotted paths, numbers (finite only), labels, ranks, text or chat messages.

Every function takes ``where`` (the file, row and line: "prefs.jsonl row 3 (line 4)") and names it,
with the field and its ``dataset.fields.<name>`` key, in the one-line error it raises:

    value({"a": {"b": 2}}, "a.b", where, "fields.score")   -> 2
    number(float("inf"), where, "field 'sc' (dataset.fields.score_chosen)")
    -> PrefrunError: prefs.jsonl row 3 (line 4): field 'sc' (dataset.fields.score_chosen) is inf, not a finite
       number; ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prefrun.errors import PrefrunError

_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


def value(obj: Mapping[str, Any], key: str, where: str, yaml_key: str) -> Any:
    """obj[key] (or a dotted path into nested fields); an error naming the row and the YAML key if absent."""
    if not isinstance(obj, Mapping):
        raise PrefrunError(f"{where}: expected an object with a field {key!r} (dataset.{yaml_key}), got {obj!r:.60}")
    if key in obj:
        found = obj[key]
    else:
        found = obj
        for part in key.split("."):
            if not isinstance(found, Mapping) or part not in found:
                raise PrefrunError(
                    f"{where}: no field {key!r} (it has: {', '.join(map(str, obj))}); "
                    f"set dataset.{yaml_key} to the name of the field that holds it"
                )
            found = found[part]
    if found is None or (isinstance(found, float) and math.isnan(found)):
        raise PrefrunError(
            f"{where}: field {key!r} (dataset.{yaml_key}) is empty (None/NaN); fill it in or drop the row"
        )
    return found


def field(obj: Mapping[str, Any], fields: Mapping[str, Any], name: str, where: str) -> Any:
    """The mapped field ``name`` of obj; a list of names (a prompt) gives the first one present and set."""
    mapping = fields[name]
    if isinstance(mapping, list | tuple):
        for key in mapping[:-1]:
            try:
                return value(obj, key, where, f"fields.{name}")
            except PrefrunError:
                continue
        return value(obj, mapping[-1], where, f"fields.{name}")
    return value(obj, mapping, where, f"fields.{name}")


def number(raw: Any, where: str, what: str) -> float:
    """raw as a finite float (numbers and numeric strings); NaN, inf and -inf are bad input like a typo."""
    try:
        parsed = float(raw)
    except (TypeError, ValueError):
        raise PrefrunError(f"{where}: {what} is {raw!r}, not a number; fix the data or map another field") from None
    if not math.isfinite(parsed):
        raise PrefrunError(
            f"{where}: {what} is {raw!r}, not a finite number; scores must be finite (not NaN, Infinity or "
            "-Infinity): fix the value or drop the row"
        )
    return parsed


def score(obj: Mapping[str, Any], fields: Mapping[str, Any], name: str, where: str) -> float:
    """The score field `name` of obj: one column, or a {column: weight} mapping summed."""
    mapping = fields[name]
    if isinstance(mapping, Mapping):
        return sum(
            float(w) * number(value(obj, col, where, f"fields.{name}.{col}"), where, f"field {col!r}")
            for col, w in mapping.items()
        )
    return number(field(obj, fields, name, where), where, f"field {mapping!r} (dataset.fields.{name})")


def label(raw: Any, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise PrefrunError(f"{where}: label is {raw!r}; a label must be true/false (or 1/0)")


def columns(row: Mapping[str, Any], fields: Mapping[str, Any], name: str, where: str) -> list[Any]:
    """The values of a list of columns, or of one column that holds a list."""
    names = fields[name]
    if isinstance(names, str):
        values = field(row, fields, name, where)
        if not isinstance(values, list | tuple):
            raise PrefrunError(f"{where}: field {names!r} (dataset.fields.{name}) is not a list")
        return list(values)
    return [value(row, col, where, f"fields.{name}") for col in names]


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


def message(m: Any, where: str, what: str) -> dict[str, Any]:
    if isinstance(m, Mapping):
        if "role" in m and "content" in m:
            return {"role": str(m["role"]), "content": m["content"]}
        if "from" in m and "value" in m:
            return {"role": _SHAREGPT_ROLES.get(m["from"], str(m["from"])), "content": m["value"]}
    raise PrefrunError(f"{where}: {what} holds {m!r:.60}, not a chat message ({{role, content}} or {{from, value}})")


def messages(raw: Any, where: str, what: str) -> list[dict[str, Any]] | None:
    """raw as a list of chat messages, or None when it is text."""
    if isinstance(raw, str):
        return None
    if isinstance(raw, Mapping):
        return [message(raw, where, what)]
    if isinstance(raw, list | tuple) and raw:
        return [message(m, where, what) for m in raw]
    raise PrefrunError(f"{where}: {what} is {raw!r:.60}, neither text nor a list of chat messages")


def prompt(raw: Any, where: str) -> str | list[dict[str, Any]]:
    """A prompt: its text, or its chat messages in {role, content} form."""
    msgs = messages(raw, where, "the prompt")
    return raw if msgs is None else msgs


def response(raw: Any, where: str, what: str) -> str:
    """A response's text: the text itself, or the content of the last of its chat messages."""
    msgs = messages(raw, where, what)
    return raw if msgs is None else msgs[-1]["content"]
