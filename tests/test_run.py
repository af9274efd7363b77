"""How a run fits data to its objective: lists to pairs, unpaired feedback, and lists that are too short."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from prefrun.data.shaping import shape_for_objective
from prefrun.objectives import get_objective

DATASET = OmegaConf.create({"name": "toy", "pairs": "best_worst", "unpaired": "top_bottom"})


def lists(*scores: list[float]) -> list[dict]:
    return [{"prompt": "p", "responses": [f"r{i}" for i in range(len(s))], "scores": s} for s in scores]


def test_pairwise_objectives_get_chosen_first_pairs_and_tied_lists_are_skipped():
    out = shape_for_objective(lists([0.1, 0.9, 0.5], [0.3, 0.3]), get_objective("dpo"), DATASET)
    assert out == [{"prompt": "p", "responses": ["r1", "r0"], "scores": [0.9, 0.1]}]


def test_a_list_shorter_than_the_objective_needs_is_a_clear_error():
    with pytest.raises(ValueError, match="needs lists of at least 2 responses; dataset toy row 1 has 1"):
        shape_for_objective(lists([0.1, 0.9], [0.5]), get_objective("lipo"), DATASET)


def test_single_responses_cannot_make_pairs():
    with pytest.raises(ValueError, match="needs pairs but dataset toy has lists of 1 response"):
        shape_for_objective(lists([0.5]), get_objective("dpo"), DATASET)


def test_unpaired_objectives_get_the_best_as_desirable_and_the_worst_as_undesirable():
    out = shape_for_objective(lists([0.1, 0.9, 0.5]), get_objective("kto"), DATASET)
    assert [(r["responses"], r["labels"]) for r in out] == [(["r1"], [True]), (["r0"], [False])]


def test_an_objective_missing_its_data_field_names_the_field_and_the_mapping():
    with pytest.raises(ValueError, match="needs a baseline_logps field .* dataset.fields.baseline_logps"):
        shape_for_objective(lists([0.5]), get_objective("poft"), DATASET)


def test_jpo_adds_joint_pairs_across_prompts_to_the_conditional_ones():
    records = [{"prompt": f"p{i}", "responses": ["a", "b"], "scores": [0.1 * i, 0.5 + 0.1 * i]} for i in range(4)]
    dataset = OmegaConf.merge(DATASET, {"joint_pairs": 6})
    out = shape_for_objective(records, get_objective("jpo"), dataset)
    conditional, joint = out[:4], out[4:]
    assert all("prompts" not in r and r["responses"] == ["b", "a"] for r in conditional)
    assert len(joint) == 6 and all(r["prompts"][0] != r["prompts"][1] for r in joint)


@pytest.mark.parametrize("name", ["dpo", "lipo"])
def test_joint_preferences_given_to_a_one_prompt_objective_is_a_clear_error(name):
    joint = [{"prompt": "x", "prompts": ["x", "z"], "responses": ["a", "b"], "scores": [1.0, 0.0]}]
    with pytest.raises(ValueError, match=f"joint preferences .* objective {name} compares .* use objective=jpo"):
        shape_for_objective(joint, get_objective(name), DATASET)
    with pytest.raises(ValueError, match="use objective=jpo, or drop dataset.joint_pairs"):
        shape_for_objective(lists([0.1, 0.9]), get_objective(name), OmegaConf.merge(DATASET, {"joint_pairs": 2}))


def test_kto_warns_as_trl_when_class_weights_do_not_balance_the_data(caplog):
    """TRL's rule: λ_D·n_D/(λ_U·n_U) in [1, 4/3]; 3 desirable vs 1 undesirable at λ_D = λ_U = 1 gives 3."""
    records = [{"prompt": "p", "responses": [f"r{i}"], "scores": [float(i > 0)], "labels": [i > 0]} for i in range(4)]
    with caplog.at_level("WARNING", logger="prefrun"):
        shape_for_objective(records, get_objective("kto"), DATASET)
    (message,) = [r.message for r in caplog.records if r.message.startswith("kto:")]
    # TRL's ranges: λ_D in [1·1/3, 1.33/3] = [0.33, 0.44], λ_U in [3/1.33, 3] = [2.26, 3.0]
    assert "3 desirable vs 1 undesirable" in message and "= 3.00" in message
    assert "desirable_weight in [0.33, 0.44]" in message and "undesirable_weight in [2.26, 3.0]" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="prefrun"):
        shape_for_objective(records, get_objective("kto", undesirable_weight=2.5), DATASET)
    assert not [r for r in caplog.records if r.message.startswith("kto:")]
