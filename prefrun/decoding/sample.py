"""``decode=sample``: the sampler as it is, one sample per prompt (what every evaluator did before decoders).

    y ~ π(· | x)   at the ``generation`` block's temperature, top-k and top-p (prefrun.generation.sampler)

No settings besides the name; no reward source.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefrun.decoding import DECODERS
from prefrun.decoding.base import Costs, Decoded


@DECODERS.register("sample")
class SampleDecoder:
    name = "sample"
    needs_reward = False

    def __init__(self, cfg: Any, reward: Any = None) -> None:
        del cfg, reward  # nothing to configure

    def decode(
        self, model: Any, tokenizer: Any, prompts: list[Any], prompt_ids: list[list[int]], settings: Any
    ) -> Decoded:
        from prefrun.generation import sample

        with Costs(model) as costs:
            samples = sample(model, tokenizer, prompt_ids, dataclasses.replace(settings, n=1), stage="decode=sample")
        return Decoded(samples=samples, report=costs.per_response(len(prompt_ids)))
