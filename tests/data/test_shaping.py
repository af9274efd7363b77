"""Score rescaling before shaping: dataset.score_scale as a factor or per-list min-max, orders unchanged."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from prefrun.data.shaping import scaled_scores, shaped
from prefrun.errors import PrefrunError
from prefrun.objectives import get_objective

LISTS = [
    {"prompt": "p", "responses": ["a", "b", "c"], "scores": [6.0, 2.0, 0.0]},
    {"prompt": "q", "responses": ["d", "e"], "scores": [3.0, 3.0]},
]


def test_a_factor_multiplies_every_score_and_minmax_maps_each_list_onto_0_1():
    assert [r["scores"] for r in scaled_scores(LISTS, 0.5)] == [[3.0, 1.0, 0.0], [1.5, 1.5]]
    assert [r["scores"] for r in scaled_scores(LISTS, "minmax")] == [[1.0, 2 / 6, 0.0], [3.0, 3.0]]  # tied: as is
    assert scaled_scores(LISTS, None) is LISTS


@pytest.mark.parametrize("bad", [0, -2.0, "big", True])
def test_a_score_scale_that_is_not_a_positive_number_or_minmax_is_refused(bad):
    with pytest.raises(PrefrunError, match=r"dataset.score_scale=.* must be a positive number"):
        scaled_scores(LISTS, bad)


def test_shaping_applies_the_scale_before_it_reshapes():
    cfg = OmegaConf.create({"name": "toy", "score_scale": "minmax"})
    records, dropped = shaped(LISTS, get_objective("lipo"), cfg)
    assert [r["scores"] for r in records] == [[1.0, 2 / 6, 0.0], [3.0, 3.0]]
    assert dropped == {"identical": 0, "identical_pairs": 0, "tied": 0}
