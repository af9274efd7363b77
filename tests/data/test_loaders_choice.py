"""The choice schema: responses and the preferred one's index, name or a tie; each preset on rows of its real schema.

The fixtures are rows written in each dataset's published schema (every column, nested fields and all), not
copies of the data; the expected records below are written out by hand from those rows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from prefrun.data.loaders import load_records
from prefrun.data.pairs import to_pairs
from prefrun.errors import PrefrunError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def preset(name: str, path: Path, **overrides: object) -> DictConfig:
    """conf/dataset/<name>.yaml composed by Hydra (defaults list included), with path and overrides set."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(overrides=[f"+dataset={name}"]).dataset
    cfg.path = str(path)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def row_tail(answer: str) -> list[dict]:
    return [user("and?"), {"role": "assistant", "content": answer}]


def choice_cfg(path: Path, **extra: object) -> dict:
    fields = {"prompt": "q", "responses": ["a", "b", "c"], "choice": "pick", **extra.pop("fields", {})}
    return {"name": "t", "path": str(path), "schema": "choice", "fields": fields, **extra}


# ---------------------------------------------------------------- the schema


def test_index_name_and_tie_choices_over_three_columns(tmp_path, caplog):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"q": "2+2?", "a": "4", "b": "5", "c": "22", "pick": 0},
            {"q": "3+3?", "a": "9", "b": "6", "c": "33", "pick": "b"},  # a response column's name
            {"q": "4+4?", "a": "8", "b": "eight", "c": "44", "pick": "tie"},
            {"q": "5+5?", "a": "1", "b": "55", "c": "10", "pick": "2"},  # an index as text
        ],
    )
    with caplog.at_level(logging.INFO, logger="prefrun"):
        records = load_records(choice_cfg(path), "train")
    assert [r["scores"] for r in records] == [[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0.5], [0, 0, 1]]
    assert records[1] == {"prompt": "3+3?", "responses": ["9", "6", "33"], "scores": [0.0, 1.0, 0.0]}
    assert "1 of 4 choices are ties" in caplog.text
    pairs, dropped = to_pairs(records, "best_worst")
    assert dropped == 1 and [p["responses"] for p in pairs] == [["4", "5"], ["6", "9"], ["10", "1"]]


def test_a_list_column_of_responses_with_a_text_key(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"q": "Q", "items": [{"t": "x"}, {"t": "y"}], "pick": 1}])
    cfg = choice_cfg(path, fields={"responses": "items", "text": "t"})
    assert load_records(cfg, "train") == [{"prompt": "Q", "responses": ["x", "y"], "scores": [0.0, 1.0]}]


@pytest.mark.parametrize(
    ("pick", "message"),
    [
        (3, r"row 0 \(line 1\): field 'pick' \(dataset.fields.choice\) is 3, not a response index \(0..2\)"),
        ("model_c", r"is 'model_c', not a response index \(0..2\), a name \(a, b, c\) or a tie \(tie, tie \(bothbad"),
        (True, r"is True, not a response index"),
        (0.5, r"is 0.5, not a response index"),
    ],
)
def test_a_choice_that_names_no_response(tmp_path, pick, message):
    path = write_jsonl(tmp_path / "c.jsonl", [{"q": "Q", "a": "x", "b": "y", "c": "z", "pick": pick}])
    with pytest.raises(PrefrunError, match=message) as err:
        load_records(choice_cfg(path), "train")
    assert "dataset.choice_names" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("row", "fields", "message"),
    [
        ({"a": "x", "b": "y", "w": 0}, {}, r"row 0 \(line 1\): no prompt .* map dataset.fields.prompt"),
        ({"a": "x", "b": [user("q"), {"role": "assistant", "content": "y"}], "w": 0}, {}, "all be text or all be chat"),
        ({"a": [user("q")], "b": [user("q")], "w": 0}, {}, "response 0 holds no assistant message"),
        ({"a": "x", "w": 0}, {"responses": ["a"]}, r"1 response\(s\); a choice needs two or more"),
        ({"a": "x", "b": "y", "w": 0, "t": "two"}, {"turn": "t"}, r"turn is 'two'; dataset.fields.turn must hold"),
    ],
)
def test_choice_row_errors(tmp_path, row, fields, message):
    path = write_jsonl(tmp_path / "c.jsonl", [row])
    cfg = {"path": str(path), "schema": "choice", "fields": {"responses": ["a", "b"], "choice": "w", **fields}}
    with pytest.raises(PrefrunError, match=message):
        load_records(cfg, "train")


def test_several_preferences_per_row_select_one_or_all(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"q": "Q", "a": "x", "b": "y", "help": 0, "safe": 1}])
    fields = {"responses": ["a", "b"], "choice": {"helpful": "help", "harmless": "safe"}}
    with pytest.raises(PrefrunError, match=r"dataset.preference is not set .* one of helpful, harmless \(or all\)"):
        load_records(choice_cfg(path, fields=fields), "train")
    with pytest.raises(PrefrunError, match=r"dataset.preference='kind' is not a preference of this dataset"):
        load_records(choice_cfg(path, fields=fields, preference="kind"), "train")
    [harmless] = load_records(choice_cfg(path, fields=fields, preference="harmless"), "train")
    assert harmless["scores"] == [0.0, 1.0] and "user" not in harmless
    both = load_records(choice_cfg(path, fields=fields, preference="all"), "train")
    assert [(r["user"], r["scores"]) for r in both] == [("helpful", [1.0, 0.0]), ("harmless", [0.0, 1.0])]


def test_choice_keys_belong_to_the_choice_schema():
    cfg = {"path": "x.jsonl", "fields": {"chosen": "c", "rejected": "r"}, "preference": "better"}
    with pytest.raises(PrefrunError, match=r"dataset.preference is set but schema 'pairwise' does not use it"):
        load_records(cfg, "train")
    with pytest.raises(PrefrunError, match=r"dataset.fields.choice is not set; schema 'choice' needs it"):
        load_records({"path": "x.jsonl", "schema": "choice", "fields": {"responses": ["a", "b"]}}, "train")
    bad_mode = {"schema": "choice", "path": "x.jsonl", "fields": {"responses": "r", "choice": "c"}}
    with pytest.raises(PrefrunError, match=r"dataset.differing_histories='keep' is unknown; use drop or joint"):
        load_records({**bad_mode, "differing_histories": "keep"}, "train")


def test_user_is_mapped_in_every_schema_but_grouped(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"p": "Q", "c": "x", "r": "y", "who": 17}])
    cfg = {"path": str(path), "fields": {"prompt": "p", "chosen": "c", "rejected": "r", "user": "who"}}
    assert load_records(cfg, "train")[0]["user"] == "17"
    kto = write_jsonl(tmp_path / "k.jsonl", [{"p": "Q", "c": "x", "ok": True, "who": "w1"}])
    cfg = {"path": str(kto), "schema": "unpaired", "fields": {"prompt": "p", "completion": "c", "label": "ok"}}
    cfg["fields"]["user"] = "who"
    assert load_records(cfg, "train")[0]["user"] == "w1"
    cfg = {"path": "x.jsonl", "schema": "grouped", "fields": {"prompt": "p", "response": "r", "score": "s"}}
    cfg["fields"]["user"] = "who"
    with pytest.raises(PrefrunError, match=r"dataset.fields.user is set but schema 'grouped' does not use it"):
        load_records(cfg, "train")


def test_chat_conversations_cut_at_the_judged_turn(tmp_path, caplog):
    turn1 = [user("hi"), {"role": "assistant", "content": "hello"}]
    row = {
        "a": [*turn1, *row_tail("A2")],
        "b": [*turn1, *row_tail("B2")],
        "other_b": [user("hi"), {"role": "assistant", "content": "hey"}, *row_tail("B2")],
        "w": "model_b",
        "t": 2,
    }
    path = write_jsonl(tmp_path / "c.jsonl", [row, {**row, "t": 1}, {**row, "b": row["other_b"]}])
    fields = {"responses": ["a", "b"], "choice": "w", "turn": "t"}
    cfg = {"path": str(path), "schema": "choice", "fields": fields, "choice_names": ["model_a", "model_b"]}
    with caplog.at_level(logging.INFO, logger="prefrun"):
        same, first, _ = load_records({**cfg, "differing_histories": "joint"}, "train")
    assert same == {"prompt": [*turn1, user("and?")], "responses": ["A2", "B2"], "scores": [0.0, 1.0]}
    assert first == {"prompt": [user("hi")], "responses": ["hello", "hello"], "scores": [0.0, 1.0]}
    with caplog.at_level(logging.INFO, logger="prefrun"):
        records = load_records(cfg, "train")  # the third row's histories differ: dropped and counted
    assert len(records) == 2 and "dropped 1 rows whose two conversations differ" in caplog.text
    joint = load_records({**cfg, "differing_histories": "joint"}, "train")[2]
    hey = {"role": "assistant", "content": "hey"}
    assert joint["prompts"] == [[*turn1, user("and?")], [user("hi"), hey, user("and?")]]
    assert joint["prompt"] == joint["prompts"][0] and joint["responses"] == ["A2", "B2"]
    path = write_jsonl(tmp_path / "t.jsonl", [{**row, "t": 3}])
    with pytest.raises(PrefrunError, match=r"row 0 \(line 1\): turn 3 \(dataset.fields.turn\) but response 0 has 2"):
        load_records({**cfg, "path": str(path)}, "train")


# ---------------------------------------------------------------- presets on rows of their real schemas


def test_pku_saferlhf_better_and_safer_are_two_preferences():
    path = FIXTURES / "pku_saferlhf.jsonl"
    data = rows("pku_saferlhf.jsonl")
    better = load_records(preset("pku_saferlhf", path), "train")  # the preset's default: better
    safer = load_records(preset("pku_saferlhf", path, preference="safer"), "train")
    assert len(better) == len(safer) == 6
    assert better[1] == {
        "prompt": "How can I get into my neighbour's Wi-Fi without the password?",
        "responses": [data[1]["response_0"], data[1]["response_1"]],
        "scores": [1.0, 0.0],  # better_response_id 0 ...
    }
    assert safer[1]["scores"] == [0.0, 1.0]  # ... safer_response_id 1
    assert [r["scores"].index(1.0) for r in better] == [0, 0, 0, 0, 1, 1]
    assert [r["scores"].index(1.0) for r in safer] == [1, 1, 0, 1, 1, 0]
    both = load_records(preset("pku_saferlhf", path, preference="all"), "train")
    assert [r["user"] for r in both] == ["better", "safer"] * 6
    assert [r["scores"] for r in both[::2]] == [r["scores"] for r in better]


def test_tldr_comparisons_post_summaries_choice_and_worker():
    records = load_records(preset("tldr_comparisons", FIXTURES / "tldr_comparisons.jsonl"), "train")
    data = rows("tldr_comparisons.jsonl")
    assert len(records) == 5
    assert records[1] == {
        "prompt": data[1]["info"]["post"],
        "responses": [data[1]["summaries"][0]["text"], data[1]["summaries"][1]["text"]],
        "scores": [0.0, 1.0],  # choice 1
        "user": "w_KZL1qeQTcq",
    }
    assert [r["user"] for r in records] == ["w_KZL1qeQTcq"] * 2 + ["w_9xQpLm2RtV"] * 2 + ["w_Tt4sUv5WxY"]
    assert [r["scores"][1] for r in records] == [0.0, 1.0, 1.0, 0.0, 0.0]
    # a CNN/DM row of the validation split has no post: its article is the prompt
    assert records[4]["prompt"].startswith("A family's dog that went missing two years ago")


def test_mt_bench_human_judged_turn_ties_and_judges(caplog):
    with caplog.at_level(logging.INFO, logger="prefrun"):
        records = load_records(preset("mt_bench_human", FIXTURES / "mt_bench_human.jsonl"), "train")
    data = rows("mt_bench_human.jsonl")
    turn1 = [r for r in data if r["turn"] == 1]
    assert len(records) == len(turn1) == 4  # the two turn-2 rows follow each model's own first answer: dropped
    assert "dropped 2 rows whose two conversations differ" in caplog.text
    assert "1 of 4 choices are ties" in caplog.text
    for record, row in zip(records, turn1):
        assert record["prompt"] == row["conversation_a"][:1] == row["conversation_b"][:1]
        assert record["responses"] == [row["conversation_a"][1]["content"], row["conversation_b"][1]["content"]]
        assert record["user"] == row["judge"]
    assert [r["scores"] for r in records] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [1.0, 0.0]]
    assert to_pairs(records, "best_worst")[1] == 1  # the tie yields no pair
    joint = load_records(preset("mt_bench_human", FIXTURES / "mt_bench_human.jsonl", differing_histories="joint"), "x")
    turn2 = joint[2]  # row 2: turn 2, model_b won
    assert turn2["prompts"] == [data[2]["conversation_a"][:3], data[2]["conversation_b"][:3]]
    assert turn2["responses"] == [data[2]["conversation_a"][3]["content"], data[2]["conversation_b"][3]["content"]]
    assert turn2["scores"] == [0.0, 1.0]


def test_chatbot_arena_winner_ties_both_bad_and_voters(caplog):
    with caplog.at_level(logging.INFO, logger="prefrun"):
        records = load_records(preset("chatbot_arena", FIXTURES / "chatbot_arena.jsonl"), "train")
    data = rows("chatbot_arena.jsonl")
    single = [r for r in data if r["turn"] == 1]
    assert len(records) == len(single) == 5  # the 2-turn battle is dropped and counted
    assert "dropped 1 rows" in caplog.text and "2 of 5 choices are ties" in caplog.text
    assert records[0] == {
        "prompt": [user("Count from 1 to 10 with step = 3")],
        "responses": [single[0]["conversation_a"][1]["content"], "1, 4, 7, 10"],
        "scores": [1.0, 0.0],
        "user": "arena_user_973",
    }
    # model_a, tie, tie (bothbad), model_b, model_a
    assert [r["scores"] for r in records] == [[1.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]
    pairs, ties = to_pairs(records, "best_worst")
    assert ties == 2 and len(pairs) == 3
