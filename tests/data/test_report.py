"""The data report: each check counts what a hand count (or the tokenizer called directly) counts, on toy
records and on 20 real Anthropic/hh-rlhf rows (harmless-base test split, its first 20 lines, MIT licence);
one run on a tiny local file reports in results.json["data"] and the log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prefrun.data.loaders import load_records
from prefrun.data.report import (
    batch_check,
    implicit_prompt_check,
    implicit_whitespace_prompt,
    messages,
    mid_word,
    score_range_check,
    tokenized_truncation,
    transcript_format,
    truncation,
)
from prefrun.data.shaping import scaled_scores, shaped
from prefrun.models.tiny import build_tokenizer
from prefrun.objectives import get_objective

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HH_REAL = FIXTURES / "hh_rlhf_harmless_test20.jsonl"
HH_FIELDS = {"chosen": "chosen", "rejected": "rejected"}


def warnings_of(report: dict, dataset: str = "toy", objective: str = "dpo") -> list[str]:
    return [line for level, line in messages(report, dataset, objective) if level == "warning"]


# ---------------------------------------------------------------- identical responses


def test_identical_pairs_and_lists_are_dropped_and_counted():
    records = [
        {"prompt": "p1", "responses": ["same", "same"], "scores": [1.0, 0.0]},  # chosen = rejected
        {"prompt": "p2", "responses": ["x", "x", "x"], "scores": [3.0, 2.0, 1.0]},  # one text three times
        {"prompt": "p3", "responses": ["a", "a", "b"], "scores": [2.0, 1.0, 0.0]},  # (a, a) is one of its pairs
        {"prompt": "p4", "responses": ["good", "bad"], "scores": [1.0, 0.0]},
    ]
    cfg = OmegaConf.create({"name": "toy", "pairs": "all"})
    pairs, dropped = shaped(records, get_objective("dpo"), cfg)
    # by hand: p1 and p2 dropped whole; p3 gives (a, a), (a, b), (a, b) of which (a, a) is dropped; p4 one pair
    assert dropped == {"identical": 2, "identical_pairs": 1, "tied": 0}
    kept = [(p["prompt"], *p["responses"]) for p in pairs]
    assert kept == [("p3", "a", "b"), ("p3", "a", "b"), ("p4", "good", "bad")]
    lists, dropped = shaped(records, get_objective("lipo"), cfg)
    assert [r["prompt"] for r in lists] == ["p3", "p4"] and dropped["identical"] == 2
    lines = warnings_of({"records": 4, "dropped": {"identical": 2, "identical_pairs": 1}})
    assert lines == [
        "dataset toy: dropped 2 of 4 records whose responses are all one text (chosen = rejected): they hold no "
        "preference",
        "dataset toy: dropped 1 pair(s) whose chosen and rejected are the same text (lists that repeat a response)",
    ]


# ---------------------------------------------------------------- one batch


def test_a_dataset_smaller_than_one_batch_is_warned_with_the_numbers():
    check = batch_check(examples=5, batch_size=32, ranks=2, steps=200)
    assert check["smaller_than_batch"] and check["epochs"] == 200  # every step is one pass over the 5
    (line,) = warnings_of({"batch": check})
    assert line == (
        "dataset toy gives 5 training example(s), fewer than one batch (train.batch_size=32, 16 per rank × 2 ranks): "
        "every step sees the same 5, not 32; lower train.batch_size or add data"
    )
    assert not batch_check(examples=32, batch_size=32, ranks=1, steps=10)["smaller_than_batch"]
    assert warnings_of({"batch": batch_check(64, 32, 1, 10)}) == []


# ---------------------------------------------------------------- truncation


def test_truncation_counts_prompts_responses_and_the_tokens_cut():
    rows = [
        {"prompt_ids": list(range(10)), "response_ids": [[1] * 3, [1] * 7]},
        {"prompt_ids": list(range(5)), "response_ids": [[1] * 4, [1] * 5]},
        # joint data: two distinct prompts (one of them twice) for three responses
        {"prompt_ids": [1] * 6, "response_ids": [[1], [1], [1]], "response_prompt_ids": [[1] * 6, [2] * 2, [1] * 6]},
    ]
    out = truncation(rows, max_prompt_len=5, max_response_len=4)
    # prompts 10, 5, 6, 2 against 5: two cut, 5 + 1 tokens; responses 3, 7, 4, 5, 1, 1, 1 against 4: two cut, 3 + 1
    assert out["prompts"] == {"cut": 2, "of": 4, "tokens_cut": 6, "max_len": 5, "longest": 10}
    assert out["responses"] == {"cut": 2, "of": 7, "tokens_cut": 4, "max_len": 4, "longest": 7}


def test_real_hh_rows_with_the_tiny_tokenizer_cut_14_of_20_prompts_and_21_of_40_responses():
    records = load_records({"path": str(HH_REAL), "fields": HH_FIELDS}, "train")
    tokenizer = build_tokenizer([])  # the tiny model's tokenizer on a loaded dataset: bytes, no words
    out = tokenized_truncation(records, tokenizer, 128, 128)
    assert (out["prompts"]["cut"], out["prompts"]["of"]) == (14, 20)
    assert (out["responses"]["cut"], out["responses"]["of"]) == (21, 40)
    # a text prompt's ids are the tokenizer's ids of its text
    lengths = [len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in records]
    assert out["prompts"]["tokens_cut"] == sum(max(0, n - 128) for n in lengths)
    assert out["prompts"]["longest"] == max(lengths)
    (line,) = [w for w in warnings_of({"truncation": out}, "local") if "max_prompt_len" in w]
    assert line.startswith("dataset local: train.max_prompt_len=128 cuts 14/20 (70%) prompts (")
    assert "train.max_response_len=128 cuts 21/40 (52%) responses" in line
    assert warnings_of({"truncation": tokenized_truncation(records, tokenizer, 4096, 4096)}) == []


# ---------------------------------------------------------------- documented score ranges


def test_scores_outside_the_objectives_range_are_warned_with_min_max_and_the_fix():
    nectar = [{"prompt": "p", "responses": list("abcdefg"), "scores": [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]}]
    check = score_range_check(nectar, [0, 1])
    assert check == {"expected": [0.0, 1.0], "min": 0.0, "max": 6.0, "outside": 5, "of": 7}  # 2..6 lie above 1
    (line,) = warnings_of({"scores": check}, objective="lipo")
    assert line == (
        "objective lipo expects scores in [0, 1] (objective.score_range) but 5 of 7 training scores lie outside "
        "(min 0, max 6); rescale with dataset.score_scale=0.166667 (every score × it) or dataset.score_scale=minmax "
        "(each list onto [0, 1])"
    )
    for fix in (0.166667, "minmax"):  # either suggested fix brings the scores into the range
        assert score_range_check(scaled_scores(nectar, fix), [0, 1])["outside"] == 0
    assert scaled_scores(nectar, "minmax")[0]["scores"] == [1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0]
    # negative scores: no factor maps them into [0, 1], so only minmax is offered
    (line,) = warnings_of({"scores": score_range_check([{"scores": [-2.0, 3.0]}], [0, 1])}, objective="lipo")
    assert line.endswith("rescale with dataset.score_scale=minmax (each list onto [0, 1])")


def test_only_objectives_that_document_a_range_carry_one():
    from hydra import compose, initialize_config_dir

    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(conf, version_base="1.3"):
        lipo = compose("config", overrides=["objective=lipo"]).objective
        dpo = compose("config", overrides=["objective=dpo"]).objective
    assert list(lipo.score_range) == [0, 1] and "score_range" not in dpo


def test_a_bad_score_scale_is_one_line_naming_the_setting():
    with pytest.raises(ValueError, match=r"dataset.score_scale=-1 must be a positive number"):
        scaled_scores([{"prompt": "p", "responses": ["a"], "scores": [1.0]}], -1)


# ---------------------------------------------------------------- implicit prompts and mid-word starts


def test_real_hh_rows_without_a_marker_put_3_replies_first_words_into_the_prompt():
    records = load_records({"path": str(HH_REAL), "fields": HH_FIELDS}, "train")
    check = implicit_prompt_check(records)
    # by hand: a prompt that does not end with the last "\n\nAssistant:" holds the start of its reply
    by_hand = sum(1 for r in records if not r["prompt"].endswith("\n\nAssistant:"))
    assert check["reply_in_prompt"] == by_hand == 3 and check["of"] == 20 and check["marker"] == "\n\nAssistant:"
    (line,) = warnings_of({"implicit_prompt": check}, "local")
    assert "3 of 20 prompts go on past the last assistant marker" in line
    assert line.endswith("""set $'dataset.prompt_marker="\\n\\nAssistant:"' or use dataset=hh_rlhf""")
    marked = load_records({"path": str(HH_REAL), "fields": HH_FIELDS, "prompt_marker": "\n\nAssistant:"}, "train")
    assert implicit_prompt_check(marked)["reply_in_prompt"] == 0


def test_the_implicit_whitespace_cut_applies_only_without_prompt_column_and_marker():
    base = {"schema": "pairwise", "fields": {"chosen": "c", "rejected": "r", "prompt": None}, "prompt_marker": None}
    assert implicit_whitespace_prompt(base)
    assert not implicit_whitespace_prompt({**base, "prompt_marker": "\n\nAssistant:"})
    assert not implicit_whitespace_prompt({**base, "fields": {"prompt": "q"}})
    assert not implicit_whitespace_prompt({**base, "schema": "list"})
    assert not implicit_whitespace_prompt({"synthetic": True})


def test_transcript_formats_are_recognised_by_their_assistant_marker():
    chatml = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant", "<|im_start|>user\nyo<|im_end|>\n"]
    assert transcript_format(chatml) is None  # one of two prompts: not most of them
    assert transcript_format([*chatml, chatml[0]])[1] == "<|im_start|>assistant\n"
    assert transcript_format(["plain text, no transcript", "another"]) is None


def test_responses_that_continue_the_prompts_last_word_are_counted():
    records = [
        {"prompt": "The answer is 4", "responses": ["2", " 2", "."], "scores": [1.0, 0.0, 0.5]},  # "2" joins "4"
        {"prompt": "Question?", "responses": ["Yes", "No"], "scores": [1.0, 0.0]},
        {"prompt": [{"role": "user", "content": "hi"}], "responses": ["Hello", "Hey"], "scores": [1.0, 0.0]},
    ]
    assert mid_word(records) == {"responses": 1, "of": 7}
    (line,) = warnings_of({"mid_word": mid_word(records)})
    assert line.startswith("dataset toy: 1 of 7 responses start inside the prompt's last word")


# ---------------------------------------------------------------- end to end


def test_a_run_reports_its_data_in_results_and_the_log(tmp_path, caplog):
    from hydra import compose, initialize_config_dir

    from prefrun.runner import run

    rows = []
    for i in range(6):  # HH transcripts; in rows 0-2 both replies start with "Sure", which the prompt takes
        prompt = f"\n\nHuman: question {i}?\n\nAssistant:"
        first = " Sure," if i < 3 else ""
        rows.append({"chosen": f"{prompt}{first} good answer {i}", "rejected": f"{prompt}{first} bad {i}"})
    rows.append({"chosen": rows[3]["chosen"], "rejected": rows[3]["chosen"]})  # chosen = rejected
    long = "\n\nHuman: long?\n\nAssistant:"
    rows.append({"chosen": f"{long} " + "word " * 40, "rejected": f"{long} no"})
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [
        "logger=none",
        "eval=none",
        "objective=dpo",
        "dataset=local",
        f"dataset.path={data}",
        "dataset.fields.chosen=chosen",
        "dataset.fields.rejected=rejected",
        "dataset.holdout=0",
        "train.steps=1",
        "train.batch_size=8",
        "train.max_response_len=32",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_heads=2",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(conf, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with caplog.at_level(logging.WARNING, logger="prefrun"):
        run(cfg, tmp_path / "run", overrides=overrides)
    report = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
    assert report["records"] == 8 and report["examples"] == 7 and report["dropped"]["identical"] == 1
    assert report["batch"]["smaller_than_batch"] and report["batch"]["examples"] == 7
    # the long reply " word word ...": one token per character (bytes, ▁ for spaces) + EOS, against 32
    responses = report["truncation"]["responses"]
    assert responses["cut"] == 1 and responses["tokens_cut"] == len(" " + "word " * 40) + 1 - 32
    assert report["implicit_prompt"]["reply_in_prompt"] == 3
    logged = [r.getMessage() for r in caplog.records if r.name == "prefrun" and r.levelno == logging.WARNING]
    for start in (
        "dataset local: dropped 1 of 8 records whose responses are all one text",
        "dataset local gives 7 training example(s), fewer than one batch (train.batch_size=8)",
        "dataset local: train.max_prompt_len=128 cuts 0/7 (0%) prompts",
        "dataset local: no dataset.prompt_marker, so each implicit prompt ends at the last whitespace",
    ):
        assert sum(line.startswith(start) for line in logged) == 1, start
