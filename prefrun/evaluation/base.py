"""What every evaluator receives and returns.

An evaluator is a function registered by name (``EVALUATORS.register("oracle")``)::

    def evaluate(inputs: EvalInputs, settings: DictConfig) -> Evaluation

``settings`` is its own block of the config (``cfg.eval.<name>``, from conf/eval/<name>.yaml). It returns
its metrics (what results.json stores) and the rows it adds to the printed summary table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LABEL_WIDTH, REFERENCE_WIDTH, POLICY_WIDTH = 22, 16, 10  # the summary table's columns


@dataclass
class EvalInputs:
    """A trained policy and what an evaluator may need to judge it; the heavy parts are built on first use."""

    policy: Any  # the trained model (eval mode, on device)
    tokenizer: Any
    reference: Callable[[], Any]  # loads the reference model on first call (cached); may return None
    data: Any  # prefrun.data.sources.RunData (eval_prompts, eval_records, reward_fn, strict_fns)
    objective: Any | None  # prefrun.objectives.Objective: implicit reward (beta, needs_reference)
    reward: Callable[[], Any]  # builds the run's reward source (cfg.reward) on first call (cached)
    generation: Any  # prefrun.generation.SamplingSettings from the `generation:` block
    device: str = "cpu"
    seed: int = 0
    max_prompt_len: int = 128
    max_response_len: int = 128


@dataclass
class Row:
    """One line of the printed summary table: a label and preformatted reference / policy cells."""

    label: str
    reference: str = ""
    policy: str = ""


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # floats and small dicts, stored in results.json / eval/<name>.json
    rows: list[Row] = field(default_factory=list)


def header(reference: str = "reference (SFT)", policy: str = "policy") -> str:
    """The table's column header line."""
    return f"{'':{LABEL_WIDTH}}{reference:>{REFERENCE_WIDTH}}{policy:>{POLICY_WIDTH}}"


def render_rows(rows: list[Row]) -> list[str]:
    """The table lines of ``rows``: the label left-aligned, the cells right-aligned in their columns.

    A row without cells is a note and prints as its label alone.
    """
    lines = []
    for row in rows:
        if not row.reference and not row.policy:
            lines.append(row.label)
        else:
            lines.append(f"{row.label:{LABEL_WIDTH}}{row.reference:>{REFERENCE_WIDTH}}{row.policy:>{POLICY_WIDTH}}")
    return lines
