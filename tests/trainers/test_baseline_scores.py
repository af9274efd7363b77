"""PoFT's baseline_logps computed by listed models: the per-token mean log-prob, the mean over models,
the on-disk cache, the preset/path/mapping entries and their errors, and a run with no such data field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from prefrun.data.synthetic import SortTask
from prefrun.data.tokenize import tokenize_record
from prefrun.errors import PrefrunError
from prefrun.models.presets import model_preset
from prefrun.models.tiny import tiny_model_dir
from prefrun.runner import run
from prefrun.trainers import baseline_scores
from prefrun.trainers.baseline_scores import resolve_baseline, score_records

ROOT = Path(__file__).resolve().parents[2]
POFT_FIXTURE = ROOT / "tests" / "fixtures" / "poft_sft.jsonl"
MAX_PROMPT, MAX_RESPONSE = 64, 64

RECORDS = [
    {"prompt": "sort: 3 1 2 =", "responses": [" 1 2 3", " 2 1 3 3 3", " x"], "scores": [1.0, 0.5, 0.0]},
    {"prompt": "sort: 9 4 =", "responses": [" 4 9"], "scores": [1.0]},
    {"prompt": [{"role": "user", "content": "sort: 5 0"}], "responses": [" 0 5", " 5"], "scores": [1.0, 0.0]},
]


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory):
    """The micro model of conftest with another init seed: a different baseline over the same tokenizer."""
    from conftest import MICRO

    return tiny_model_dir({**MICRO, "init_seed": 1}, SortTask().words(), tmp_path_factory.mktemp("models2"))


def _score(records, baselines, cache_dir, **kw):
    records = copy.deepcopy(records)
    stats = score_records(
        records,
        baselines,
        words=SortTask().words(),
        cache_dir=cache_dir,
        device="cpu",
        max_prompt_len=kw.pop("max_prompt_len", MAX_PROMPT),
        max_response_len=kw.pop("max_response_len", MAX_RESPONSE),
        **kw,
    )
    return records, stats


def _direct_mean_logps(model_dir, record) -> list[float]:
    """Each response alone, unpadded: log_softmax over the forward of prompt + response, mean over its tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    row = tokenize_record(record, tokenizer, MAX_PROMPT, MAX_RESPONSE)
    out = []
    for response in row["response_ids"]:
        ids = torch.tensor([row["prompt_ids"] + response])
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        p = len(row["prompt_ids"])
        total = sum(logps[t - 1, ids[0, t]].item() for t in range(p, ids.shape[1]))
        out.append(total / len(response))
    return out


def test_per_token_mean_logp_equals_a_direct_forward(tmp_path, micro_model_dir):
    records, stats = _score(RECORDS, [str(micro_model_dir)], tmp_path, batch_size=3)  # padding across lengths
    assert stats == {"models": 1, "hits": 0, "misses": 1}
    for record in records:
        assert record["baseline_logps"] == pytest.approx(_direct_mean_logps(micro_model_dir, record), abs=1e-5)


def test_two_baselines_give_the_mean_of_each(tmp_path, micro_model_dir, second_model_dir):
    first, _ = _score(RECORDS, [str(micro_model_dir)], tmp_path / "a")
    second, _ = _score(RECORDS, [str(second_model_dir)], tmp_path / "b")
    both, stats = _score(RECORDS, [str(micro_model_dir), {"path": str(second_model_dir)}], tmp_path / "c")
    assert stats == {"models": 2, "hits": 0, "misses": 2}
    for a, b, m in zip(first, second, both):
        assert a["baseline_logps"] != pytest.approx(b["baseline_logps"])  # the two models differ
        assert m["baseline_logps"] == pytest.approx(
            [(x + y) / 2 for x, y in zip(a["baseline_logps"], b["baseline_logps"])]
        )


def test_second_call_loads_from_disk_and_a_changed_input_misses(
    tmp_path, micro_model_dir, second_model_dir, monkeypatch
):
    first, stats = _score(RECORDS, [str(micro_model_dir)], tmp_path)
    assert stats["misses"] == 1 and stats["hits"] == 0
    assert len(list((tmp_path / "baselines").glob("ref-*.json"))) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("a cache hit must not load the model")

    monkeypatch.setattr(baseline_scores, "load_model", no_model)
    again, stats = _score(RECORDS, [str(micro_model_dir)], tmp_path)
    assert stats == {"models": 1, "hits": 1, "misses": 0}
    assert [r["baseline_logps"] for r in again] == [r["baseline_logps"] for r in first]
    monkeypatch.undo()

    assert _score(RECORDS, [str(second_model_dir)], tmp_path)[1]["misses"] == 1  # another model
    assert _score(RECORDS, [str(micro_model_dir)], tmp_path, max_response_len=2)[1]["misses"] == 1  # truncation
    changed = copy.deepcopy(RECORDS)
    changed[1]["responses"] = [" 9 4"]
    assert _score(changed, [str(micro_model_dir)], tmp_path)[1]["misses"] == 1  # the data
    assert len(list((tmp_path / "baselines").glob("ref-*.json"))) == 4
    assert not list((tmp_path / "baselines").glob(".ref-*"))  # no temporary file left behind


def test_a_preset_name_composes_the_hub_defaults(tmp_path):
    zephyr = resolve_baseline("zephyr7b_sft", 0, [], tmp_path)
    assert zephyr.path == "alignment-handbook/zephyr-7b-sft-full"
    assert zephyr.model_cfg.dtype == "bfloat16" and zephyr.model_cfg.revision == "main"  # from _hub.yaml
    hub = resolve_baseline({"path": "org/model", "revision": "v1", "dtype": "float16"}, 0, [], tmp_path)
    assert (hub.path, hub.model_cfg.revision, hub.model_cfg.dtype) == ("org/model", "v1", "float16")
    assert model_preset("tiny").builtin is True


@pytest.mark.parametrize(
    "entry, message",
    [
        ("zephyr_7b", r"objective\.baselines\[0\]='zephyr_7b' is neither a model preset \(.*zephyr7b_sft"),
        ("/no/such/model", r"objective\.baselines\[0\]='/no/such/model' is neither"),
        ({"revision": "main"}, r"objective\.baselines\[0\]=.*: no path"),
        ({"path": "org/m", "revison": "x"}, r"unknown key\(s\) revison"),
        (3, r"give a model preset name, a path or a mapping"),
    ],
)
def test_a_bad_entry_is_one_clear_error(tmp_path, entry, message):
    with pytest.raises(PrefrunError, match=message) as info:
        _score(RECORDS, [entry], tmp_path)
    assert "\n" not in str(info.value)


def test_a_directory_without_a_model_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrefrunError, match=r"objective\.baselines\[0\] \(.*empty\): cannot load its tokenizer") as info:
        _score(RECORDS, [str(tmp_path / "empty")], tmp_path)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------- a whole run


def _poft_overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "dataset=local",
        f"dataset.path={POFT_FIXTURE}",
        "dataset.schema=scored_responses",
        "dataset.fields.prompt=question",
        "dataset.fields.responses=[answer]",
        "dataset.fields.scores=[quality]",
        "objective=poft",
        "logger=none",
        "eval=none",
        "train.steps=2",
        "train.batch_size=2",
        f"train.max_prompt_len={MAX_PROMPT}",
        f"train.max_response_len={MAX_RESPONSE}",
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/c",
        *extra,
    ]


def _compose(overrides: list[str]):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_poft_run_computes_baselines_without_a_data_field_and_a_second_run_hits_the_cache(tmp_path, micro_model_dir):
    overrides = _poft_overrides(tmp_path, f"objective.baselines=[{micro_model_dir}]")
    results = run(_compose(overrides), tmp_path / "run", overrides=overrides)
    assert results["training"]["examples"] > 0
    assert results["training"]["baseline_cache"] == {"models": 1, "hits": 0, "misses": 1}
    assert json.loads((tmp_path / "run" / "results.json").read_text())["training"]["baseline_cache"]["misses"] == 1
    again = run(_compose([*overrides, "seed=1"]), tmp_path / "run2", overrides=overrides)
    assert again["training"]["baseline_cache"] == {"models": 1, "hits": 1, "misses": 0}


def test_poft_refuses_baselines_from_both_the_data_and_models(tmp_path, micro_model_dir):
    overrides = _poft_overrides(
        tmp_path, "dataset.fields.baseline_logps=aligned_logps", f"objective.baselines=[{{path:{micro_model_dir}}}]"
    )
    with pytest.raises(PrefrunError, match="already gives baseline_logps .* keep one of the two"):
        run(_compose(overrides), tmp_path / "run", overrides=overrides)


def test_poft_without_either_says_both_ways_to_fix_it(tmp_path):
    overrides = _poft_overrides(tmp_path)
    with pytest.raises(PrefrunError, match=r"dataset\.fields\.baseline_logps=<column> or .*objective\.baselines="):
        run(_compose(overrides), tmp_path / "run", overrides=overrides)
