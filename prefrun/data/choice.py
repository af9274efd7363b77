"""The `choice` schema: two or more responses and which one was preferred (an index, a name, or a tie).

Many human-preference datasets give the responses and the annotator's choice instead of a chosen/rejected
pair or scores. PKU-SafeRLHF, with two choices per row (select one with `dataset.preference`):

    schema: choice
    fields: {prompt: prompt, responses: [response_0, response_1],
             choice: {better: better_response_id, safer: safer_response_id}}
    preference: better

    {"prompt": "Q", "response_0": "a", "response_1": "b", "better_response_id": 1, "safer_response_id": 0}
    -> {"prompt": "Q", "responses": ["a", "b"], "scores": [0.0, 1.0]}

Rules:
- `fields.responses` is one list column or a list of columns; `fields.text` is the text's key inside
  each item (openai/summarize_from_feedback: `summaries[i].text`).
- The choice is a 0-based index, a name from `dataset.choice_names` (default: the response columns;
  lmsys: `[model_a, model_b]`), or a tie (`dataset.ties`: "tie", "tie (bothbad)"). The chosen response
  scores 1 and the others 0; a tie scores every response 0.5 and is kept as a tie (pairwise objectives
  drop it; the loader counts ties in the log).
- `fields.choice` is one column, or {label: column} for several preferences per row;
  `dataset.preference=<label>` selects one, `dataset.preference=all` makes one record per label with
  the label as its `user` (a pluralistic dataset), unless `fields.user` maps an annotator id.
- Chat conversations (lmsys: conversation_a/b): each response is an assistant message and the prompt
  is the conversation before it: the last assistant message, or the `fields.turn`-th (1-based; MT-Bench
  rows hold both turns and say which one was judged). When the two conversations differ before the
  judged answer (a second turn follows each model's own first answer), the row is dropped and counted
  (`dataset.differing_histories=drop`), or kept as a joint preference (`joint`: each response with its
  own prompt; only objective=jpo trains on those).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefrun.data import fields as get
from prefrun.data.records import Record, make_record
from prefrun.errors import PrefrunError

DEFAULT_TIES = ("tie", "tie (bothbad)")
HISTORY_MODES = ("drop", "joint")


@dataclass
class ChoiceCounts:
    """What the choice schema set aside while loading, for the log."""

    ties: int = 0
    differing_histories: int = 0
    by_label: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ChoiceSettings:
    """The dataset keys the choice schema reads besides its fields (see conf/dataset/local.yaml)."""

    fields: Mapping[str, Any]
    labels: tuple[tuple[str, str], ...]  # (preference label, its column), the selected ones
    one_per_label: bool  # dataset.preference=all: the label becomes each record's user
    names: tuple[str, ...] | None
    ties: tuple[str, ...]
    differing_histories: str


def settings(fields: Mapping[str, Any], raw: Mapping[str, Any]) -> ChoiceSettings:
    """Check the choice-specific keys of a dataset config (its `fields` already checked)."""
    mapping = fields["choice"]
    columns = dict(mapping) if isinstance(mapping, Mapping) else {"choice": mapping}
    preference = raw.get("preference")
    if preference is None and len(columns) > 1:
        raise PrefrunError(
            f"dataset.preference is not set and this dataset has {len(columns)} preferences per row; "
            f"set dataset.preference to one of {', '.join(columns)} (or all)"
        )
    if preference not in (None, "all") and preference not in columns:
        raise PrefrunError(
            f"dataset.preference={preference!r} is not a preference of this dataset; use one of "
            f"{', '.join(columns)} (or all), or map it in dataset.fields.choice"
        )
    chosen = list(columns) if preference in (None, "all") else [preference]
    names = raw.get("choice_names")
    ties = raw.get("ties")
    mode = raw.get("differing_histories") or "drop"
    if mode not in HISTORY_MODES:
        raise PrefrunError(f"dataset.differing_histories={mode!r} is unknown; use drop or joint")
    return ChoiceSettings(
        fields=fields,
        labels=tuple((label, str(columns[label])) for label in chosen),
        one_per_label=preference == "all" and len(columns) > 1,
        names=tuple(str(n) for n in names) if names else None,
        ties=tuple(str(t).strip().lower() for t in (DEFAULT_TIES if ties is None else ties)),
        differing_histories=mode,
    )


def choice_records(
    rows: Iterator[tuple[str, dict[str, Any]]], s: ChoiceSettings, counts: ChoiceCounts
) -> Iterator[tuple[str, dict[str, Any], Record]]:
    """(where, row, record) for each row and selected preference label; ties and dropped rows counted."""
    for where, row in rows:
        prompt, prompts, responses = _prompt_and_responses(row, s, where)
        if prompt is None and prompts is None:
            counts.differing_histories += 1
            continue
        for label, column in s.labels:
            key = "fields.choice" + ("" if label == "choice" else f".{label}")
            choice = get.value(row, column, where, key)
            scores = _scores(choice, len(responses), _names(s), s.ties, where, f"field {column!r} (dataset.{key})")
            if len(set(scores)) == 1:
                counts.ties += 1
            counts.by_label[label] = counts.by_label.get(label, 0) + 1
            extra: dict[str, Any] = {} if prompts is None else {"prompts": prompts}
            if s.one_per_label and "user" not in s.fields:
                extra["user"] = label
            yield where, row, make_record(prompt if prompts is None else prompts[0], responses, scores, **extra)


def _names(s: ChoiceSettings) -> tuple[str, ...] | None:
    if s.names is not None:
        return s.names
    mapped = s.fields["responses"]
    return tuple(mapped) if isinstance(mapped, list | tuple) else None


def _scores(
    choice: Any, k: int, names: Sequence[str] | None, ties: Sequence[str], where: str, what: str
) -> list[float]:
    """1 for the chosen response and 0 for the others; 0.5 for all in a tie."""
    index: int | None = None
    if isinstance(choice, str):
        text = choice.strip()
        if text.lower() in ties:
            return [0.5] * k
        if names is not None and text in names:
            index = list(names).index(text)
        elif text.lstrip("-").isdigit():
            index = int(text)
    elif isinstance(choice, int | float) and not isinstance(choice, bool) and float(choice).is_integer():
        index = int(choice)
    if index is None or not 0 <= index < k:
        named = f", a name ({', '.join(names)})" if names else ""
        raise PrefrunError(
            f"{where}: {what} is {choice!r}, not a response index (0..{k - 1}){named} "
            f"or a tie ({', '.join(ties)}); fix the row, or set dataset.choice_names / dataset.ties to the "
            "data's values"
        )
    return [1.0 if j == index else 0.0 for j in range(k)]


def _prompt_and_responses(row: dict[str, Any], s: ChoiceSettings, where: str) -> tuple[Any, Any, list[str]]:
    """(shared prompt, per-response prompts, responses); both prompts None: a row to drop."""
    items = get.columns(row, s.fields, "responses", where)
    if len(items) < 2:
        raise PrefrunError(f"{where}: {len(items)} response(s); a choice needs two or more (dataset.fields.responses)")
    if "text" in s.fields:
        name = s.fields["responses"]
        items = [get.field(item, s.fields, "text", f"{where} {name}[{j}]") for j, item in enumerate(items)]
    turn = _turn(get.field(row, s.fields, "turn", where), where) if "turn" in s.fields else None
    cut = [_judged(item, turn, where, f"response {j}") for j, item in enumerate(items)]
    histories, responses = [h for h, _ in cut], [r for _, r in cut]
    if all(h is None for h in histories):
        return get.prompt(_mapped_prompt(row, s, where), where), None, responses
    if any(h is None for h in histories):
        raise PrefrunError(f"{where}: the responses must all be text or all be chat conversations")
    if all(h == histories[0] for h in histories):
        shared = histories[0] or get.prompt(_mapped_prompt(row, s, where), where)
        return shared, None, responses
    if s.differing_histories == "drop":
        return None, None, responses
    return None, [h or get.prompt(_mapped_prompt(row, s, where), where) for h in histories], responses


def _mapped_prompt(row: dict[str, Any], s: ChoiceSettings, where: str) -> Any:
    if "prompt" not in s.fields:
        raise PrefrunError(
            f"{where}: no prompt (the responses are text, or chat messages with nothing before the answer); "
            "map dataset.fields.prompt to the field that holds it"
        )
    return get.field(row, s.fields, "prompt", where)


def _turn(raw: Any, where: str) -> int:
    turn = 0
    if isinstance(raw, int | float) and not isinstance(raw, bool) and float(raw).is_integer():
        turn = int(raw)
    elif isinstance(raw, str) and raw.strip().isdigit():
        turn = int(raw)
    if turn < 1:
        raise PrefrunError(f"{where}: turn is {raw!r}; dataset.fields.turn must hold a turn number 1, 2, ...")
    return turn


def _judged(item: Any, turn: int | None, where: str, what: str) -> tuple[list[dict[str, Any]] | None, str]:
    """(the conversation before the judged answer, or None for text; the answer's text)."""
    msgs = get.messages(item, where, what)
    if msgs is None:
        return None, item
    answers = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if not answers:
        raise PrefrunError(f"{where}: {what} holds no assistant message; a choice compares assistant answers")
    if turn is not None and turn > len(answers):
        raise PrefrunError(
            f"{where}: turn {turn} (dataset.fields.turn) but {what} has {len(answers)} assistant message(s)"
        )
    at = answers[-1 if turn is None else turn - 1]
    return msgs[:at], msgs[at]["content"]
