"""``data/select=random``: a uniformly random subset of the records, the baseline every selection is compared with.

The subset is drawn with ``random.Random(seed).sample`` (``seed``: the step's own, so every run of a sweep compares
against the same random subset unless it asks for another); the kept records keep the dataset's order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from prefrun.data.records import Record
from prefrun.selection.pool import budget, check_budget
from prefrun.selection.steps import SELECTION_STEPS, Selection, SelectionContext


@SELECTION_STEPS.register("random")
class RandomSubset:
    version = 1
    cache_exempt: tuple[str, ...] = ()

    def __init__(self, *, k: int | None = None, fraction: float | None = None, seed: int = 0) -> None:
        check_budget(k, fraction)
        self.k, self.fraction, self.seed = k, fraction, int(seed)

    def fingerprints(self, records: Sequence[Record], ctx: SelectionContext) -> dict[str, str]:
        return {}

    def select(self, records: Sequence[Record], ctx: SelectionContext) -> Selection:
        n_keep = budget(len(records), self.k, self.fraction)
        return Selection(indices=sorted(random.Random(self.seed).sample(range(len(records)), n_keep)))
