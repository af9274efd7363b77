"""The deita step: complexity × quality first, the cosine diversity filter, scorers that raise, embedders."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pytest

from prefrun.data import synthetic
from prefrun.data.records import make_record
from prefrun.errors import PrefrunError
from prefrun.selection.deita import (
    Deita,
    HashedBagEmbedder,
    HiddenStateEmbedder,
    deita_scores,
    diversity_filter,
    normalised,
)
from prefrun.selection.pool import record_text
from prefrun.selection.steps import SelectionContext

ORACLE = SelectionContext(reward_fn=synthetic.oracle_reward)


def sort_records(n: int, seed: int) -> list[dict]:
    return synthetic.preference_records(synthetic.SortTask(), n, k=4, max_swaps=6, corrupt_prob=0.3, seed=seed)


def permuted_copy(record: dict, rng: random.Random) -> dict:
    """A near-duplicate: the same numbers in another order (so the same sorted answer)."""
    numbers = synthetic.parse_prompt(record["prompt"])
    rng.shuffle(numbers)
    prompt = synthetic.format_prompt(numbers)
    return make_record(prompt, record["responses"], [synthetic.oracle_reward(prompt, r) for r in record["responses"]])


def test_scores_are_complexity_times_quality():
    records = sort_records(5, seed=1)
    expected = [
        len(synthetic.parse_prompt(r["prompt"]))
        * synthetic.oracle_reward(r["prompt"], r["responses"][int(np.argmax(r["scores"]))])
        for r in records
    ]
    assert deita_scores(records, "sort_items", "oracle", ORACLE) == pytest.approx(expected)
    # prompt_tokens counts "sort:" and "->" too; chosen_score is the best score, here the oracle's
    assert deita_scores(records, "prompt_tokens", "chosen_score", ORACLE) == pytest.approx(
        [(len(synthetic.parse_prompt(r["prompt"])) + 2) * max(r["scores"]) for r in records]
    )


def test_without_the_filter_the_top_k_scores_are_kept():
    records = sort_records(30, seed=2)
    chosen = Deita(k=7, tau=1.0, complexity="sort_items", quality="oracle").select(records, ORACLE)
    scores = deita_scores(records, "sort_items", "oracle", ORACLE)
    assert chosen.indices == sorted(sorted(range(30), key=lambda i: (-scores[i], i))[:7])


def test_the_filter_admits_no_pair_above_tau_and_rejects_only_similar_rows():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    vectors = normalised(np.repeat(centres, 8, axis=0) + 0.3 * rng.normal(size=(40, 16)))
    order = list(rng.permutation(40))
    tau = 0.8
    admitted, rejected = diversity_filter(vectors, order, tau, n_keep=40)
    sims = vectors[admitted] @ vectors[admitted].T
    assert (sims[~np.eye(len(admitted), dtype=bool)] <= tau).all()
    for position, i in enumerate(order):  # greedy: each rejected row is too close to one admitted before it
        if i not in admitted:
            earlier = [a for a in admitted if order.index(a) < position]
            assert max(float(vectors[a] @ vectors[i]) for a in earlier) > tau
    assert rejected == 40 - len(admitted)
    assert 5 <= len(admitted) < 40


def test_injected_near_duplicates_are_removed():
    rng = random.Random(3)
    base = sort_records(40, seed=3)
    pool = base + [permuted_copy(rng.choice(base), rng) for _ in range(40)]
    chosen = Deita(k=40, complexity="sort_items", quality="oracle").select(pool, ORACLE)
    number_sets = [frozenset(synthetic.parse_prompt(pool[i]["prompt"])) for i in chosen.indices]
    assert len(set(number_sets)) == len(number_sets)  # no two kept records sort the same numbers
    embeddings = HashedBagEmbedder()([record_text(pool[i]) for i in chosen.indices])
    assert (embeddings @ embeddings.T - np.eye(len(chosen.indices))).max() <= 0.9


def test_a_filter_that_runs_out_keeps_fewer_and_says_so():
    pool = [make_record("sort: 1 2 ->", [" 1 2"], [1.0]) for _ in range(5)]
    chosen = Deita(k=3).select(pool, SelectionContext())
    assert chosen.indices == [0]
    assert chosen.details == {**chosen.details, "short_by": 2, "rejected_as_similar": 4}


def test_a_failing_scorer_raises_instead_of_a_default_score():
    pool = [*sort_records(3, seed=1), make_record("translate: bonjour", [" hello"], [1.0])]
    with pytest.raises(PrefrunError, match=r"data.select.complexity=sort_items failed on record 3 \(ValueError"):
        deita_scores(pool, "sort_items", "chosen_score", ORACLE)
    with pytest.raises(PrefrunError, match="quality=oracle needs a dataset with an oracle"):
        deita_scores(pool, "prompt_tokens", "oracle", SelectionContext())
    with pytest.raises(PrefrunError, match=r"data.select.quality=field:rating failed on record 0 \(KeyError"):
        deita_scores(pool, "prompt_tokens", "field:rating", ORACLE)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_a_negative_or_non_finite_score_is_refused(bad):
    pool = [{**make_record("sort: 1 2 ->", [" 1 2"], [1.0]), "rating": bad}]
    with pytest.raises(PrefrunError, match="Deita's product needs finite scores"):
        deita_scores(pool, "prompt_tokens", "field:rating", ORACLE)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"k": 2, "complexity": "length"}, "data.select.complexity='length'; available: prompt_tokens"),
        ({"k": 2, "quality": "judge"}, "data.select.quality='judge'; available: chosen_score"),
        ({"k": 2, "tau": 1.5}, "data.select.tau=1.5"),
        ({"k": 2, "embedder": "bert"}, "data.select.embedder='bert'"),
        ({"k": 2, "embedder": "hidden_states"}, "needs data.select.embed_model"),
        ({"fraction": 0.0}, "data.select.fraction=0.0"),
    ],
)
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(PrefrunError, match=message):
        Deita(**params)


def test_a_budget_above_the_pool_size_is_refused():
    with pytest.raises(PrefrunError, match="data.select.k=9 but the dataset has only 3 records"):
        Deita(k=9).select(sort_records(3, seed=1), ORACLE)


def test_hashed_embeddings_count_crc32_buckets():
    vector = HashedBagEmbedder(dim=64)(["b a b"])[0]
    expected = np.zeros(64)
    for token, count in (("a", 1), ("b", 2)):
        expected[zlib.crc32(token.encode()) % 64] += count
    assert vector == pytest.approx(expected / np.linalg.norm(expected))
    with_bigrams = HashedBagEmbedder(dim=64, ngram=2)(["x y z", "z y x"])
    assert float(with_bigrams[0] @ with_bigrams[1]) < 0.99  # order matters once bigrams count


def test_hidden_state_embeddings_are_the_last_real_tokens_whatever_the_padding(micro_model):
    import torch

    model, tokenizer = micro_model
    texts = ["sort: 1 2 ->", "sort: 3 4 5 6 7 8 ->", "sort: 9 ->"]
    batched = HiddenStateEmbedder(model, tokenizer, batch_size=3)(texts)
    for text, row in zip(texts, batched, strict=True):
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            alone = model(**ids, output_hidden_states=True).hidden_states[-1][0, -1].numpy()
        assert row == pytest.approx(alone / np.linalg.norm(alone), abs=1e-5)
    tokenizer.padding_side = "left"
    assert HiddenStateEmbedder(model, tokenizer, batch_size=2)(texts) == pytest.approx(batched, abs=1e-5)


def test_the_step_embeds_with_a_model_preset_and_fingerprints_it(tmp_path):
    from prefrun.selection.steps import apply_selection

    records = sort_records(12, seed=4)
    step = {"name": "deita", "k": 4, "embedder": "hidden_states", "embed_model": "tiny"}
    words = synthetic.SortTask().words()
    kept, report = apply_selection(records, step, tmp_path, words=words)
    assert len(kept) == 4
    assert report["inputs"]["embed_model"].startswith(str(tmp_path / "models" / "tiny-"))
    with pytest.raises(PrefrunError, match="neither a model preset nor a directory"):
        apply_selection(records, {**step, "embed_model": "no_such_model"}, tmp_path, words=words)
