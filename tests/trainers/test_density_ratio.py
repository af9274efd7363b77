"""BCO's UDM density-ratio weights on synthetic embeddings where the answer is known, and their inputs.

Two unit-variance Gaussian clouds with means μ_D and μ_U: the log density ratio is linear,
log p_D(x)/p_U(x) = (μ_D − μ_U)·x − (|μ_D|² − |μ_U|²)/2, so a balanced logistic regression's p/(1 − p)
recovers it however many examples each class has.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.trainers.density_ratio import (
    UDMSettings,
    class_sample,
    density_ratio_weights,
    fit_prompt_classifier,
    mean_pooled_embeddings,
    udm_settings,
    with_udm_weights,
)


def clouds(n_des: int, n_und: int, shift: float, dim: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(shift, 1.0, (n_des, dim)), rng.normal(-shift, 1.0, (n_und, dim))])
    labels = np.r_[np.ones(n_des, dtype=bool), np.zeros(n_und, dtype=bool)]
    return x, labels


def test_weights_are_the_clamped_density_ratio_of_the_two_clouds():
    x, labels = clouds(1500, 600, shift=0.5)  # 1500 desirable: the classifier sees a sample of 1024
    weights, info = density_ratio_weights(labels, lambda idx: x[idx], UDMSettings(), seed=0)
    und = ~labels
    assert np.all(weights[labels] == 1.0)
    assert info["sample_desirable"] == 1024 and info["sample_undesirable"] == 600
    # exactly p/(1 − p + 1e-8) of the fitted classifier, clamped (the same seeded sample refits identically)
    des_idx, und_idx = class_sample(labels, 1024, seed=0)
    clf = fit_prompt_classifier(x[des_idx], x[und_idx])
    p = clf.predict_proba(x[und])[:, 1]
    np.testing.assert_allclose(weights[und], np.clip(p / (1 - p + 1e-8), 0.5, 10.0), rtol=1e-12)
    # ... which recovers the true ratio exp(x₁ + x₂) where it is not clamped
    true = np.exp(x[und].sum(axis=1))
    inside = (true > 0.6) & (true < 8.0)
    assert inside.sum() > 100
    assert np.median(np.abs(weights[und][inside] / true[inside] - 1)) < 0.1
    # the clamp [0.5, 10] is reached at both ends
    assert weights[und].min() == 0.5 and weights[und].max() == 10.0
    assert 0.6 < info["classifier_accuracy_desirable"] < 0.9


def test_balanced_class_weights_give_about_one_when_the_classes_overlap_fully():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (2500, 2))  # one distribution; a sample of 1024 desirable vs 500 undesirable
    labels = np.r_[np.ones(2000, dtype=bool), np.zeros(500, dtype=bool)]
    weights, info = density_ratio_weights(labels, lambda idx: x[idx], UDMSettings(), seed=0)
    assert info["mean_undesirable_weight"] == pytest.approx(1.0, abs=0.02)
    assert np.median(np.abs(weights[~labels] - 1)) < 0.15 and np.all(np.abs(np.log(weights[~labels])) < 0.7)
    # without class_weight="balanced" the ratio would be the class prior, ≈ 4
    from sklearn.linear_model import LogisticRegression

    p = LogisticRegression().fit(x, labels.astype(int)).predict_proba(x[~labels])[:, 1]
    assert (p / (1 - p)).mean() > 3.5


def test_embeddings_are_asked_once_for_the_sampled_desirable_and_every_undesirable_example():
    x, labels = clouds(50, 30, shift=1.0)
    asked = []

    def embed(idx):
        asked.append(idx.copy())
        return x[idx]

    settings = UDMSettings(prompt_sample_size=10, min_density_ratio=0.1, max_density_ratio=50.0)
    first, info = density_ratio_weights(labels, embed, settings, seed=3)
    assert len(asked) == 1 and len(asked[0]) == 10 + 30
    assert set(np.flatnonzero(~labels)) <= set(asked[0].tolist())
    assert info["sample_desirable"] == 10 and info["sample_undesirable"] == 10
    again, _ = density_ratio_weights(labels, lambda idx: x[idx], settings, seed=3)
    np.testing.assert_array_equal(first, again)  # fixed seed, deterministic fit: every rank agrees
    assert np.all((first[~labels] >= 0.1) & (first[~labels] <= 50.0))


@pytest.mark.parametrize("labels", [[True] * 6, [False] * 6], ids=["only_desirable", "only_undesirable"])
def test_one_class_of_labels_is_a_one_line_error(labels):
    x = np.zeros((6, 2))
    with pytest.raises(PrefrunError, match="needs desirable and undesirable examples") as e:
        density_ratio_weights(labels, lambda idx: x[idx], UDMSettings(), seed=0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "block, message",
    [
        ({"min_density_ratio": 10.0, "max_density_ratio": 0.5}, "0 < min ≤ max"),
        ({"min_density_ratio": 0.0}, "0 < min ≤ max"),
        ({"prompt_sample_size": 0}, "must be ≥ 1"),
        ({"prompt_sample_size": 2.5}, "is not an integer"),
        ({"max_density_ratio": "lots"}, "is not a number"),
        ({"embeding_model": "x"}, "objective.udm.embeding_model is unknown"),
    ],
)
def test_bad_settings_are_one_line_errors(block, message):
    with pytest.raises(PrefrunError, match=message) as e:
        udm_settings(OmegaConf.create({"enabled": True, **block}))
    assert "\n" not in str(e.value)


def test_settings_default_to_bco_s_and_disabled_means_none():
    assert udm_settings(None) is None
    assert udm_settings(OmegaConf.create({"enabled": False, "min_density_ratio": 99.0})) is None
    assert udm_settings(OmegaConf.create({"enabled": True, "embedding_model": None})) == UDMSettings(1024, 0.5, 10.0)


# --- embeddings from the model ---------------------------------------------------------------------------
def test_mean_pooled_embeddings_do_not_depend_on_batching_or_padding(micro_model):
    model, tokenizer = micro_model
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [5, 6, 7]]
    batched = mean_pooled_embeddings(model, prompts, tokenizer.pad_token_id, batch_size=3, device="cpu")
    assert batched.shape == (4, model.config.hidden_size)
    for row, ids in zip(batched, prompts):
        with torch.no_grad():
            hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        np.testing.assert_allclose(row, hidden.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    # The same prompt in a batch of 3 and alone: equal up to float rounding of differently shaped matmuls.
    np.testing.assert_allclose(batched[0], batched[3], rtol=1e-6, atol=1e-7)


def _unpaired_dataset(tokenizer, n: int = 12):
    from datasets import Dataset

    rows = []
    for i in range(n):
        good = i % 2 == 0
        prompt = tokenizer("3 1 2" if good else "9 8 7 6 5", add_special_tokens=False)["input_ids"] + [4 + i % 3]
        rows.append({"prompt_ids": prompt, "response_ids": [[5, 6]], "scores": [float(good)], "labels": [good]})
    return Dataset.from_list(rows)


def test_with_udm_weights_adds_one_weight_per_record(micro_model, micro_model_dir):
    from prefrun.objectives import get_objective

    model, tokenizer = micro_model
    dataset = _unpaired_dataset(tokenizer)
    cfg = OmegaConf.create({"udm": {"enabled": True, "prompt_sample_size": 1024}})
    model.train()
    out, info = with_udm_weights(dataset, model, tokenizer, cfg, get_objective("bco"), device="cpu", seed=0)
    weights = [w[0] for w in out["udm_weights"]]
    assert [w for w, (lab,) in zip(weights, out["labels"]) if lab] == [1.0] * 6
    bad = [w for w, (lab,) in zip(weights, out["labels"]) if not lab]
    assert all(0.5 <= w <= 10.0 for w in bad) and info["mean_undesirable_weight"] == pytest.approx(np.mean(bad))
    assert model.training  # embedded in eval mode (no dropout), then left as it was
    # another model's embeddings: a local directory (here the same micro model, loaded as a bare backbone)
    cfg.udm.embedding_model = str(micro_model_dir)
    other, _ = with_udm_weights(dataset, model, tokenizer, cfg, get_objective("bco"), device="cpu", seed=0)
    assert len(other["udm_weights"]) == len(dataset)
    # disabled: the dataset is returned as it is
    cfg.udm.enabled = False
    same, none = with_udm_weights(dataset, model, tokenizer, cfg, get_objective("bco"), device="cpu", seed=0)
    assert none is None and "udm_weights" not in same.column_names


def test_udm_on_an_objective_without_weights_is_a_one_line_error(micro_model):
    from prefrun.objectives import get_objective

    model, tokenizer = micro_model
    cfg = OmegaConf.create({"udm": {"enabled": True}})
    with pytest.raises(PrefrunError, match="objective kto takes no UDM weights"):
        with_udm_weights(
            _unpaired_dataset(tokenizer), model, tokenizer, cfg, get_objective("kto"), device="cpu", seed=0
        )
