"""The zipfit step: top-K by alignment to a target set, its targets (preset or file) and its refusals."""

from __future__ import annotations

import json
import random
import zlib

import pytest

from prefrun.data import synthetic
from prefrun.data.records import make_record
from prefrun.errors import PrefrunError
from prefrun.selection.steps import SelectionContext
from prefrun.selection.zipfit import ZipFit, load_target

WORDS = "the a river mill letter drawer weather valley old slow read folded put ran mild past she it".split()


def off_task(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 9)))


def sort_records(n: int, seed: int) -> list[dict]:
    return synthetic.preference_records(synthetic.SortTask(), n, k=2, max_swaps=2, corrupt_prob=0.0, seed=seed)


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def hand_alignment(x: str, targets: list[str]) -> float:
    def c(s: str) -> int:
        return len(zlib.compress(s.encode(), 9))

    return 1 - sum((c(x + t) - min(c(x), c(t))) / max(c(x), c(t)) for t in targets) / len(targets)


def test_keeps_the_top_k_by_hand_computed_alignment_in_data_order(tmp_path):
    rng = random.Random(0)
    pool = sort_records(6, seed=1) + [make_record(off_task(rng), [" x"], [1.0]) for _ in range(6)]
    rng.shuffle(pool)
    targets = sort_records(4, seed=2)
    target_file = write_jsonl(tmp_path / "t.jsonl", targets)
    step = ZipFit(target=target_file, k=5, text="prompt", processes=1)
    chosen = step.select(pool, SelectionContext())
    scores = [hand_alignment(r["prompt"], [t["prompt"] for t in targets]) for r in pool]
    expected = sorted(sorted(range(len(pool)), key=lambda i: (-scores[i], i))[:5])
    assert chosen.indices == expected
    assert chosen.details["alignment_threshold"] == pytest.approx(sorted(scores, reverse=True)[4])


def test_precision_on_sort_prompts_mixed_with_off_task_strings(tmp_path):
    rng = random.Random(3)
    sort_pool = sort_records(40, seed=4)
    pool = sort_pool + [make_record(off_task(rng), [" x"], [1.0]) for _ in range(40)]
    target_file = write_jsonl(tmp_path / "t.jsonl", sort_records(30, seed=5))
    chosen = ZipFit(target=target_file, k=40, text="prompt", processes=1).select(pool, SelectionContext())
    precision = sum(i < 40 for i in chosen.indices) / 40
    assert precision >= 0.95


def test_fraction_keeps_that_share_rounded_down():
    pool = sort_records(10, seed=1)
    step = ZipFit(target="unused", fraction=0.29, processes=1)
    step._targets = sort_records(3, seed=2)  # the target set, without reading a preset
    assert len(step.select(pool, SelectionContext()).indices) == 2


def test_prompt_response_text_uses_the_best_scored_response(tmp_path):
    # Two records with the same prompt: the one whose chosen (best) response matches the targets' wins.
    pool = [
        make_record("q", [" apple pie recipe", " zz"], [0.0, 1.0]),  # chosen: " zz"
        make_record("q", [" apple pie recipe", " zz"], [1.0, 0.0]),  # chosen: " apple pie recipe"
    ]
    target_file = write_jsonl(tmp_path / "t.jsonl", [make_record("q", [" apple pie recipe"], [1.0])])
    assert ZipFit(target=target_file, k=1, processes=1).select(pool, SelectionContext()).indices == [1]


def test_a_dataset_preset_target_loads_its_train_records():
    records = load_target("sort")
    task = synthetic.SortTask()
    assert records[:3] == synthetic.preference_records(task, 3, 8, 6, 0.2, seed=10_000)[:3]


def test_an_empty_target_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    step = ZipFit(target=str(tmp_path / "empty.jsonl"), k=1)
    with pytest.raises(PrefrunError, match="target set is empty"):
        step.select(sort_records(3, seed=1), SelectionContext())


def test_a_budget_above_the_pool_size_is_refused(tmp_path):
    target_file = write_jsonl(tmp_path / "t.jsonl", sort_records(2, seed=2))
    with pytest.raises(PrefrunError, match="data.select.k=5 but the dataset has only 3 records"):
        ZipFit(target=target_file, k=5).select(sort_records(3, seed=1), SelectionContext())


def test_a_target_of_another_record_shape_is_refused(tmp_path):
    chat = [make_record([{"role": "user", "content": "sort: 1 2 ->"}], [" 1 2"], [1.0])]
    target_file = write_jsonl(tmp_path / "chat.jsonl", chat)
    with pytest.raises(PrefrunError, match="chat prompts but the dataset's have text prompts"):
        ZipFit(target=target_file, k=1).select(sort_records(3, seed=1), SelectionContext())


def test_prompt_response_on_targets_without_responses_is_refused(tmp_path):
    target_file = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "sort: 1 2 ->"}])
    with pytest.raises(PrefrunError, match="use data.select.text=prompt"):
        ZipFit(target=target_file, k=1).select(sort_records(3, seed=1), SelectionContext())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"target": "sort", "k": 2, "fraction": 0.1}, "exactly one of data.select.k"),
        ({"target": "sort"}, "exactly one of data.select.k"),
        ({"target": "sort", "k": 0}, "data.select.k=0 must be a positive integer"),
        ({"target": "sort", "fraction": 1.5}, r"data.select.fraction=1.5 must be in \(0, 1\]"),
        ({"target": "sort", "k": 2, "level": 0}, "stores without compressing"),
        ({"target": "sort", "k": 2, "text": "response"}, "data.select.text='response' must be one of"),
        ({"target": "sort", "k": 2, "target_split": "dev"}, "data.select.target_split='dev'"),
        ({"target": "sort", "k": 2, "max_targets": 0}, "data.select.max_targets=0"),
    ],
)
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(PrefrunError, match=message):
        ZipFit(**params)


def test_an_unknown_or_missing_target_is_refused():
    with pytest.raises(PrefrunError, match="neither a file nor a dataset preset; presets: .*sort"):
        load_target("no_such_dataset")
    with pytest.raises(PrefrunError, match="data.select.target is not set"):
        load_target(None)
