"""Loaders: each preset on a hand-made fixture of its schema, every error, and real rows of public datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import prefrun
from prefrun.data.loaders import DatasetSpec, load_records, ranks_to_scores
from prefrun.data.pairs import to_pairs
from prefrun.errors import PrefrunError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
REAL = Path(prefrun.__file__).resolve().parents[2] / "shared" / "data" / "real"
PRESETS = [
    "local",
    "hh_rlhf",
    "ultrafeedback_binarized",
    "ultrafeedback",
    "nectar",
    "kto_mix",
    "shp",
    "helpsteer2",
    "pku_saferlhf",
    "tldr_comparisons",
    "mt_bench_human",
    "chatbot_arena",
]
H, A = "\n\nHuman: ", "\n\nAssistant:"


def preset(name: str, path: Path | str, **overrides: object) -> DictConfig:
    """conf/dataset/<name>.yaml composed by Hydra (defaults list included), with path and overrides set."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(overrides=[f"+dataset={name}"]).dataset
    cfg.path = str(path)
    for key, value in overrides.items():
        if key.startswith("fields_"):
            cfg.fields[key.removeprefix("fields_")] = value
        else:
            cfg[key] = value
    return cfg


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def pair_cfg(path: Path, **fields: object) -> dict:
    return {"name": "t", "path": str(path), "schema": "pairwise", "fields": fields}


# ---------------------------------------------------------------- presets on fixtures


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_with_hydra(name):
    cfg = preset(name, "x.jsonl")
    if name == "local":  # the user maps the fields
        cfg.fields.chosen, cfg.fields.rejected = "chosen", "rejected"
    spec = DatasetSpec.from_config(cfg)
    assert spec.name == name and spec.path == "x.jsonl"
    if name != "local":
        assert spec.hub_id and spec.splits and spec.splits["train"]


def test_hh_rlhf_prompt_is_the_shared_prefix_up_to_the_last_assistant_marker():
    records = load_records(preset("hh_rlhf", FIXTURES / "hh_rlhf.jsonl"), "train")
    assert records[0] == {
        "prompt": H + "What is the capital of France?" + A,
        "responses": [" Paris.", " I don't know."],
        "scores": [1.0, 0.0],
    }
    # multi-turn, both answers start with "I": the prompt still ends at the last marker
    assert records[1]["prompt"] == H + "Can you say hi in Japanese?" + A + " こんにちは (konnichiwa)." + H + (
        "And in French?" + A
    )
    assert records[1]["responses"] == [" I would say « bonjour » ☀", " I don't speak French."]
    # the same answer twice: kept, scored [1, 0] as the data says chosen/rejected
    assert records[2]["responses"] == [" You're welcome.", " You're welcome."]
    assert len(records) == 3


def test_implicit_text_prompt_without_marker_ends_at_the_last_shared_whitespace(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"c": "Q: 2+2?\nA: 4", "r": "Q: 2+2?\nA: 45"}])
    [record] = load_records(pair_cfg(path, chosen="c", rejected="r"), "train")
    assert record["prompt"] == "Q: 2+2?\nA:"
    assert record["responses"] == [" 4", " 45"]


def test_ultrafeedback_binarized_keeps_chat_prompt_and_scores_and_its_tie():
    records = load_records(preset("ultrafeedback_binarized", FIXTURES / "ultrafeedback_binarized.jsonl"), "train")
    assert records[0] == {
        "prompt": [{"role": "user", "content": "Name a prime number."}],
        "responses": ["7 is prime.", "9 is prime."],
        "scores": [9.0, 2.5],
    }
    assert records[1]["prompt"] == [{"role": "user", "content": "Translate «merci» to English."}]
    assert records[1]["responses"] == ["Thank you.", "Thanks — merci means thanks."]
    assert records[1]["scores"] == [8.5, 8.5]  # a tie loads as a tie; to_pairs drops it
    assert to_pairs(records, "best_worst") == ([records[0]], 1)


def test_parquet_gives_the_same_records_as_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = FIXTURES / "ultrafeedback_binarized.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "uf.parquet")
    from_parquet = load_records(preset("ultrafeedback_binarized", tmp_path / "uf.parquet"), "train")
    assert from_parquet == load_records(preset("ultrafeedback_binarized", source), "train")


def test_ultrafeedback_raw_list_with_the_score_field_chosen_in_yaml():
    path = FIXTURES / "ultrafeedback_raw.jsonl"
    records = load_records(preset("ultrafeedback", path), "train")
    assert len(records) == 2  # the third row has one completion: below min_k = 2
    assert records[0]["prompt"] == "Write a haiku about the sea 🌊"
    assert records[0]["responses"] == [
        "Waves fold into foam",
        "The sea is big.",
        "Salt wind, gull's cry, tide",
        "Ocean ocean ocean",
    ]
    assert records[0]["scores"] == [4.25, 2.5, 4.75, 1.25]  # fine-grained_score
    assert records[1]["scores"] == [4.0, 4.0]  # a tie
    overall = load_records(preset("ultrafeedback", path, fields_score="overall_score"), "train")
    assert overall[0]["scores"] == [7.0, 4.0, 8.5, 2.0]
    nested = load_records(preset("ultrafeedback", path, fields_score="annotations.helpfulness.Rating"), "train")
    assert nested[0]["scores"] == [4.0, 2.0, 5.0, 1.0]  # the ratings are strings "4", ...
    mixed = load_records(preset("ultrafeedback", path, fields_score={"overall_score": 1, "fine-grained_score": 2}), "x")
    assert mixed[0]["scores"] == [15.5, 9.0, 18.0, 4.5]


def test_nectar_scores_come_from_the_order_of_ranks():
    records = load_records(preset("nectar", FIXTURES / "nectar.jsonl"), "train")
    assert records[0]["prompt"] == H + "What color is the sky?" + A + " "
    assert records[0]["responses"][0] == "Answer 1: blue!"
    assert records[0]["scores"] == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    # unsorted answers, ranks [1, 7, 3, 2, 6, 4, 5]
    assert records[1]["responses"][:2] == ["γειά σου", "bonjour"]
    assert records[1]["scores"] == [6.0, 0.0, 4.0, 5.0, 1.0, 3.0, 2.0]
    first3 = load_records(preset("nectar", FIXTURES / "nectar.jsonl", k=3), "train")
    assert first3[1]["responses"] == ["γειά σου", "bonjour", "yassou"]
    assert first3[1]["scores"] == [6.0, 0.0, 4.0]


def test_rank_gaps_and_duplicates_use_only_the_order(tmp_path):
    assert ranks_to_scores([1, 2, 3]) == [2.0, 1.0, 0.0]
    assert ranks_to_scores([3, 1, 7]) == [1.0, 2.0, 0.0]  # gaps: same as [2, 1, 3]
    assert ranks_to_scores([1, 2, 2, 4]) == [2.0, 1.0, 1.0, 0.0]  # duplicates: a tie
    answers = [{"answer": t, "rank": r} for t, r in [("a", 2), ("b", 5), ("c", 2), ("d", 9)]]
    path = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "p", "answers": answers}])
    [record] = load_records(preset("nectar", path), "train")
    assert record["scores"] == [2.0, 1.0, 2.0, 0.0]


def test_kto_mix_unpaired_chat():
    records = load_records(preset("kto_mix", FIXTURES / "kto_mix.jsonl"), "train")
    assert records[0] == {
        "prompt": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Capital of Japan?"},
        ],
        "responses": ["Tokyo (東京)."],
        "scores": [1.0],
        "labels": [True],
    }
    assert (records[1]["responses"], records[1]["scores"], records[1]["labels"]) == (
        ["Kyoto."],
        [0.0],
        [False],
    )
    assert [m["role"] for m in records[2]["prompt"]] == ["user", "assistant", "user"]
    assert records[2]["responses"] == ["Goodbye 👋"]


def test_shp_scores_are_the_upvotes():
    records = load_records(preset("shp", FIXTURES / "shp.jsonl"), "train")
    assert records[0] == {
        "prompt": "How do I keep basil fresh?",
        "responses": ["Put it in water like flowers.", "Freeze it."],
        "scores": [120.0, 30.0],
    }
    assert records[1]["prompt"] == "Crème brûlée without a torch?" and records[1]["scores"] == [15.0, 45.0]
    assert records[2]["scores"] == [10.0, 10.0]


def test_helpsteer2_groups_rows_by_prompt():
    records = load_records(preset("helpsteer2", FIXTURES / "helpsteer2.jsonl"), "train")
    # "Say hi in Korean" has one response: below min_k = 2
    assert [r["prompt"] for r in records] == ["c#", "Explain naïve Bayes.", "Is 1 prime?"]
    assert records[0]["responses"] == ["C# is a language by Microsoft.", "A musical note."]
    assert records[0]["scores"] == [3.0, 1.0]
    assert records[2]["scores"] == [3.0, 3.0]
    weighted = preset("helpsteer2", FIXTURES / "helpsteer2.jsonl", fields_score={"helpfulness": 1, "correctness": 0.5})
    assert load_records(weighted, "train")[0]["scores"] == [5.0, 2.0]


def test_local_csv_with_a_field_mapping():
    cfg = preset(
        "local",
        FIXTURES / "local.csv",
        fields_prompt="question",
        fields_chosen="good",
        fields_rejected="bad",
        fields_score_chosen="good_score",
        fields_score_rejected="bad_score",
    )
    records = load_records(cfg, "train")
    assert records[0] == {"prompt": "What is 2+2?", "responses": ["4", "5"], "scores": [1.0, 0.0]}
    assert records[1] == {
        "prompt": 'Say "hello" in Spanish',
        "responses": ["hola", "adiós"],
        "scores": [0.9, 0.1],
    }
    assert records[2]["scores"] == [0.5, 0.5]


def test_max_rows_min_k_and_split_pattern(tmp_path):
    assert len(load_records(preset("hh_rlhf", FIXTURES / "hh_rlhf.jsonl", max_rows=2), "train")) == 2
    write_jsonl(tmp_path / "test.jsonl", [{"p": "q", "c": "a", "r": "b"}])
    cfg = pair_cfg(tmp_path / "{split}.jsonl", prompt="p", chosen="c", rejected="r")
    assert load_records({**cfg, "splits": {"eval": "test"}}, "eval")[0]["responses"] == ["a", "b"]


def test_hub_loading_passes_id_subset_data_dir_and_split(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(hub_id, name=None, data_dir=None, split=None):
        calls.append((hub_id, name, data_dir, split))
        return [{"chosen": H + "hi" + A + " yo", "rejected": H + "hi" + A + " no"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = preset("hh_rlhf", "", data_dir="harmless-base")
    cfg.path = None
    assert load_records(cfg, "eval")[0]["responses"] == [" yo", " no"]
    assert calls == [("Anthropic/hh-rlhf", None, "harmless-base", "test")]

    def offline(*args, **kwargs):
        raise ConnectionError("no network\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(PrefrunError, match=r"Anthropic/hh-rlhf split 'test'.*ConnectionError: no network\); check"):
        load_records(cfg, "eval")


# ---------------------------------------------------------------- errors


def test_missing_file_names_the_path_and_the_key(tmp_path):
    with pytest.raises(PrefrunError, match=r"dataset.path .*nope.jsonl: no such file"):
        load_records(pair_cfg(tmp_path / "nope.jsonl", chosen="c", rejected="r"), "train")


def test_unknown_extension(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(PrefrunError, match=r"unknown extension '.txt'; use one of .jsonl, .json, .parquet, .csv"):
        load_records(pair_cfg(tmp_path / "d.txt", chosen="c", rejected="r"), "train")


def test_row_missing_a_mapped_field_names_field_row_file_and_yaml_key(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"p": "q", "c": "a", "r": "b"}, {"p": "q", "c": "a", "bad": "b"}])
    with pytest.raises(PrefrunError) as err:
        load_records(pair_cfg(path, prompt="p", chosen="c", rejected="r"), "train")
    message = str(err.value)
    assert f"{path} row 1 (line 2)" in message
    assert "no field 'r'" in message and "dataset.fields.rejected" in message
    assert "\n" not in message


def test_empty_dataset(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PrefrunError, match="no records after loading"):
        load_records(pair_cfg(tmp_path / "empty.jsonl", chosen="c", rejected="r"), "train")


def test_none_and_nan_scores_name_the_row(tmp_path):
    fields = {"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": "sc", "score_rejected": "sr"}
    path = write_jsonl(tmp_path / "d.jsonl", [{"p": "q", "c": "a", "r": "b", "sc": None, "sr": 0}])
    with pytest.raises(PrefrunError, match=r"row 0 \(line 1\): field 'sc' \(dataset.fields.score_chosen\) is empty"):
        load_records(pair_cfg(path, **fields), "train")
    (tmp_path / "d.csv").write_text("p,c,r,sc,sr\nq,a,b,1,0\nq,a,b,,0\n")
    with pytest.raises(PrefrunError, match=r"d.csv row 1 \(line 3\): field 'sc'.* is empty \(None/NaN\)"):
        load_records(pair_cfg(tmp_path / "d.csv", **fields), "train")
    (tmp_path / "n.jsonl").write_text('{"p": "q", "c": "a", "r": "b", "sc": NaN, "sr": 0}\n')
    with pytest.raises(PrefrunError, match="is empty"):
        load_records(pair_cfg(tmp_path / "n.jsonl", **fields), "train")
    path = write_jsonl(tmp_path / "s.jsonl", [{"p": "q", "c": "a", "r": "b", "sc": "N/A", "sr": 0}])
    with pytest.raises(PrefrunError, match=r"row 0 \(line 1\): field 'sc' \(dataset.fields.score_chosen\) is 'N/A'"):
        load_records(pair_cfg(path, **fields), "train")


def test_a_response_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "p", "answers": ["plain text", "more"]}])
    with pytest.raises(PrefrunError, match=r"answers\[0\]: expected an object with a field 'answer'"):
        load_records(preset("nectar", path), "train")


def test_missing_rank_names_the_response(tmp_path):
    path = write_jsonl(
        tmp_path / "n.jsonl", [{"prompt": "p", "answers": [{"answer": "a", "rank": 1}, {"answer": "b"}]}]
    )
    with pytest.raises(PrefrunError, match=r"row 0 \(line 1\) answers\[1\]: no field 'rank'.*dataset.fields.rank"):
        load_records(preset("nectar", path), "train")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "listwise"}, r"dataset.schema='listwise' is unknown"),
        ({"fields": {"chosen": "c", "rejected": "r", "chosn": "x"}}, r"dataset.fields.chosn is not a field"),
        ({"fields": {"chosen": "c", "rejected": "r", "rank": "x"}}, r"schema 'pairwise' does not use it"),
        ({"fields": {"chosen": "c"}}, r"dataset.fields.rejected is not set"),
        (
            {"fields": {"chosen": "c", "rejected": "r", "score_chosen": "s"}},
            r"set both dataset.fields.score_chosen",
        ),
        (
            {"schema": "list", "fields": {"prompt": "p", "responses": "l"}},
            r"exactly one of dataset.fields.score",
        ),
        ({"k": 2, "min_k": 3}, r"dataset.min_k=3 exceeds dataset.k=2"),
        (
            {"fields": {"chosen": ["c"], "rejected": "r"}},
            r"dataset.fields.chosen=\['c'\] must be a field name$",
        ),
        ({"k": 0}, r"dataset.k=0 must be a positive integer"),
        ({"path": None}, r"set dataset.path to a local file"),
    ],
)
def test_config_errors(tmp_path, change, message):
    cfg = {**pair_cfg(tmp_path / "d.jsonl", chosen="c", rejected="r"), **change}
    with pytest.raises(PrefrunError, match=message):
        load_records(cfg, "train")


def test_split_the_data_lacks():
    with pytest.raises(PrefrunError, match=r"no 'eval' split \(dataset.splits.eval is null\)"):
        load_records(preset("nectar", FIXTURES / "nectar.jsonl"), "eval")


@pytest.mark.parametrize(
    ("row", "fields", "message"),
    [
        (
            {"c": "a", "r": [{"role": "assistant", "content": "b"}]},
            {},
            "both be text or both be chat messages",
        ),
        ({"c": "same", "r": "same"}, {}, "share no prompt text"),
        ({"c": "x\n\nHuman: a", "r": "x\n\nHuman: b"}, {"marker": True}, r"share no '\\n\\nAssistant:'"),
        (
            {
                "c": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
                "r": [{"role": "user", "content": "v"}, {"role": "assistant", "content": "b"}],
            },
            {},
            "differ before their last message",
        ),
        (
            {"c": [{"role": "assistant", "content": "a"}], "r": [{"role": "assistant", "content": "b"}]},
            {},
            "set dataset.fields.prompt",
        ),
        ({"c": 3, "r": 4}, {}, "neither text nor a list of chat messages"),
        ({"c": [{"text": "a"}], "r": [{"text": "b"}]}, {}, "not a chat message"),
    ],
)
def test_row_errors(tmp_path, row, fields, message):
    cfg = pair_cfg(write_jsonl(tmp_path / "d.jsonl", [row]), chosen="c", rejected="r")
    if fields.get("marker"):
        cfg["prompt_marker"] = A
    with pytest.raises(PrefrunError, match=message):
        load_records(cfg, "train")


def test_bad_label_and_bad_json(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", [{"prompt": "p", "completion": "a", "label": "maybe"}])
    with pytest.raises(PrefrunError, match=r"row 0 \(line 1\): label is 'maybe'; a label must be true/false"):
        load_records(preset("kto_mix", path), "train")
    (tmp_path / "bad.jsonl").write_text('{"c": "q a", "r": "q b"}\n{"c": \n')
    with pytest.raises(PrefrunError, match=r"bad.jsonl line 2: not valid JSON"):
        load_records(pair_cfg(tmp_path / "bad.jsonl", chosen="c", rejected="r"), "train")


# ---------------------------------------------------------------- real rows


def test_every_loader_on_the_real_rows():
    """Real rows of public datasets, when present beside the checkout (``REAL``), through each preset."""
    if not REAL.is_dir():
        pytest.skip(f"real rows not present at {REAL} (they live beside the repository, in shared/data/real)")

    def raw(name: str) -> list[dict]:
        return [json.loads(line) for line in (REAL / name).read_text(encoding="utf-8").splitlines() if line]

    # hh-rlhf harmless-base test, 20 rows: prompt + response rebuilds each transcript exactly
    records = load_records(preset("hh_rlhf", REAL / "hh-rlhf.jsonl"), "train")
    assert len(records) == 20
    for record, row in zip(records, raw("hh-rlhf.jsonl")):
        assert record["prompt"].startswith(H) and record["prompt"].endswith(A)
        assert [record["prompt"] + r for r in record["responses"]] == [row["chosen"], row["rejected"]]
        assert record["scores"] == [1.0, 0.0]

    # H4 train_prefs row 0: a real tie 8.5/8.5, kept by the loader and dropped by to_pairs
    [record] = load_records(
        preset("ultrafeedback_binarized", REAL / "reconstructed/ultrafeedback_binarized_H4.jsonl"), "x"
    )
    assert record["prompt"] == [{"role": "user", "content": "how can i develop a habit of drawing daily"}]
    assert record["responses"][0].startswith("Developing a daily habit of drawing")
    assert record["scores"] == [8.5, 8.5]
    assert to_pairs([record], "best_worst") == ([], 1)

    # trl-lib: no prompt column, the implicit prompt is the chat messages before the answer
    path = REAL / "reconstructed/ultrafeedback_binarized_trl-lib.jsonl"
    records = load_records(preset("ultrafeedback_binarized", path), "train")
    assert len(records) == 10
    for record, row in zip(records, raw(path.relative_to(REAL).as_posix())):
        assert record["prompt"] == row["chosen"][:1]
        assert record["responses"] == [row["chosen"][1]["content"], row["rejected"][1]["content"]]
        assert record["scores"] == [row["score_chosen"], row["score_rejected"]]
    assert to_pairs(records, "best_worst")[1] == 1  # row 3 is a 9.0/9.0 tie

    # Nectar train row 0: 7 answers ranked 1..7
    [record] = load_records(preset("nectar", REAL / "reconstructed/nectar.jsonl"), "train")
    assert record["prompt"] == "\n\nHuman: 0.002 = 1000 \n1 = x?\n\nAssistant: "
    assert record["responses"][0].startswith("To find the value of x")
    assert record["scores"] == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]

    [record] = load_records(preset("shp", REAL / "shp.jsonl"), "train")
    assert record["prompt"].startswith("What's the best way to disassemble raspberries?")
    assert record["responses"][0].startswith("Pectinex, perhaps?") and record["scores"] == [340.0, 166.0]

    # HelpSteer2 has one real row: one response, so min_k is lowered to 1 to see it
    [record] = load_records(preset("helpsteer2", REAL / "helpsteer2.jsonl", min_k=1), "train")
    assert record["prompt"] == "c#" and record["scores"] == [3.0]
    assert record["responses"][0].startswith("C# is a high-level")

    # LLaMA-Factory KTO demo via local: the last message of `messages` is the judged completion
    path = REAL / "other_schemas/llamafactory_kto_en_demo.jsonl"
    cfg = preset("local", path, schema="unpaired", fields_completion="messages", fields_label="label")
    records = load_records(cfg, "train")
    assert len(records) == 20 and sum(r["labels"][0] for r in records) == 12
    for record, row in zip(records, raw(path.relative_to(REAL).as_posix())):
        assert record["prompt"] == row["messages"][:-1]
        assert record["responses"] == [row["messages"][-1]["content"]]

    # LLaMA-Factory DPO demo via local: ShareGPT {from, value} messages, chosen/rejected one message each
    path = REAL / "other_schemas/llamafactory_dpo_en_demo.jsonl"
    cfg = preset("local", path, fields_prompt="conversations", fields_chosen="chosen", fields_rejected="rejected")
    records = load_records(cfg, "train")
    assert len(records) == 15
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    for record, row in zip(records, raw(path.relative_to(REAL).as_posix())):
        assert record["prompt"] == [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]
        assert record["responses"] == [row["chosen"]["value"], row["rejected"]["value"]]


def test_extra_per_record_fields_are_mapped_in_any_schema(tmp_path):
    """baseline_logps (PoFT): one value per response, or M values per response that are averaged."""
    path = tmp_path / "sft.jsonl"
    path.write_text(
        '{"q": "2+2?", "a": "4", "ok": true, "base": [[-0.5, -1.5]]}\n'
        '{"q": "3+3?", "a": "6", "ok": false, "base": [-2.0]}\n'
    )
    cfg = {
        "path": str(path),
        "schema": "unpaired",
        "fields": {"prompt": "q", "completion": "a", "label": "ok", "baseline_logps": "base"},
    }
    records = load_records(cfg, "train")
    assert [r["baseline_logps"] for r in records] == [[-1.0], [-2.0]]


def test_extra_fields_must_match_the_number_of_responses(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text('{"q": "2+2?", "a": "4", "ok": true, "base": [-0.5, -1.5]}\n')
    cfg = {
        "path": str(path),
        "schema": "unpaired",
        "fields": {"prompt": "q", "completion": "a", "label": "ok", "baseline_logps": "base"},
    }
    with pytest.raises(ValueError, match="2 baseline_logps for 1 responses"):
        load_records(cfg, "train")


def test_dove_rows_with_prompt_rejected_become_joint_records():
    """DOVE's format (i_chosen, r_chosen, i_reject, r_reject): three real conditional rows, three joint ones."""
    cfg = preset(
        "local",
        FIXTURES / "dove_joint.jsonl",
        fields_prompt="i_chosen",
        fields_chosen="r_chosen",
        fields_prompt_rejected="i_reject",
        fields_rejected="r_reject",
    )
    records = load_records(cfg, "train")
    rows = [json.loads(line) for line in (FIXTURES / "dove_joint.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for record, row in zip(records, rows):
        assert record["prompts"] == [row["i_chosen"], row["i_reject"]] and record["prompt"] == row["i_chosen"]
        assert record["responses"] == [row["r_chosen"], row["r_reject"]] and record["scores"] == [1.0, 0.0]
    assert sum(r["prompts"][0] != r["prompts"][1] for r in records) == 3


def test_chat_histories_may_differ_only_for_joint_preferences(tmp_path):
    row = {
        "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "user", "content": "bye"}, {"role": "assistant", "content": "no"}],
    }
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(PrefrunError, match="prompt_rejected"):
        load_records(preset("local", path, fields_chosen="chosen", fields_rejected="rejected"), "train")
    cfg = preset("local", path, fields_chosen="chosen", fields_rejected="rejected", fields_prompt_rejected="chosen")
    (record,) = load_records(cfg, "train")
    assert record["prompts"] == [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "bye"}]]
    assert record["responses"] == ["hello", "no"]
