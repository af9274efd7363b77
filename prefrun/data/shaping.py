"""Fitting a dataset's lists to what an objective trains on: pairs, unpaired feedback, or lists of ≥ min_k.

``objective`` is a bound ``prefrun.objectives.Objective`` (read through its ``spec`` and ``hparams``);
the data layer never imports the objectives, it only reads what they declare.

Before any reshaping, ``clean_lists`` rescales the scores (``dataset.score_scale``) and drops records whose
responses are all one text (``pairs.drop_identical``); ``shaped`` also returns what was dropped, for the
run's data report (``prefrun.data.report``).
"""

from __future__ import annotations

import logging
from typing import Any

from prefrun.data.augment import reward_conditioned
from prefrun.data.pairs import drop_identical, joint_pairs, to_pairs, to_unpaired
from prefrun.data.records import Record
from prefrun.errors import PrefrunError

log = logging.getLogger("prefrun")


def scaled_scores(records: list[Record], scale: Any) -> list[Record]:
    """Scores rescaled by ``dataset.score_scale``: null (as given), a number c > 0 (every score × c, which keeps
    scores comparable across prompts) or ``minmax`` (each list mapped onto [0, 1] by (s − min)/(max − min);
    a list whose scores are all equal is left as it is). Neither changes any list's order.

    >>> scaled_scores([{"prompt": "p", "responses": ["a", "b", "c"], "scores": [6.0, 3.0, 0.0]}], "minmax")[0]["scores"]
    [1.0, 0.5, 0.0]
    """
    if scale is None:
        return records
    if scale == "minmax":
        out = []
        for record in records:
            lo, hi = min(record["scores"]), max(record["scores"])
            scores = [(x - lo) / (hi - lo) for x in record["scores"]] if hi > lo else list(record["scores"])
            out.append({**record, "scores": scores})
        return out
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise PrefrunError(
            f"dataset.score_scale={scale!r} must be a positive number (every score × it), minmax "
            "(each list onto [0, 1]) or null"
        )
    return [{**record, "scores": [x * scale for x in record["scores"]]} for record in records]


def clean_lists(records: list[Record], dataset_cfg: Any) -> tuple[list[Record], int]:
    """The records with ``dataset.score_scale`` applied and without those whose responses are all one text
    (to one prompt: chosen = rejected); the number of those dropped."""
    return drop_identical(scaled_scores(records, dataset_cfg.get("score_scale")))


def shape_for_objective(records: list[Record], objective: Any, dataset_cfg: Any) -> list[Record]:
    """Turn lists into what the objective trains on: pairs, unpaired feedback, or lists of ≥ min_k."""
    return shaped(records, objective, dataset_cfg)[0]


def shaped(records: list[Record], objective: Any, dataset_cfg: Any) -> tuple[list[Record], dict[str, int]]:
    """``shape_for_objective``'s records and what shaping dropped on the way, as counts:

    identical        records whose responses are all one text (dropped before shaping)
    identical_pairs  pairs of one text twice, made from lists that repeat a response (dropped)
    tied             lists that yield no example of the objective's kind (tied scores)
    """
    spec = objective.spec
    for field in ("baseline_logps",):  # per-response data an objective cannot train without
        if field in spec.inputs and any(field not in r for r in records):
            raise PrefrunError(
                f"objective {spec.name} needs a {field} field in dataset {dataset_cfg.name}; "
                f"map it with dataset.fields.{field}=<column> or compute it with "
                "objective.baselines=[<model preset or path>, ...]"
            )
    records, identical = clean_lists(records, dataset_cfg)
    counts = {"identical": identical, "identical_pairs": 0, "tied": 0}
    if not records:
        return records, counts
    has_labels = "labels" in records[0]
    joint_wanted = int(dataset_cfg.get("joint_pairs") or 0)
    if spec.data != "unpaired" and not spec.joint and (joint_wanted or any("prompts" in r for r in records)):
        raise PrefrunError(
            f"dataset {dataset_cfg.name} holds joint preferences (responses to different prompts); objective "
            f"{spec.name} compares responses to one prompt: use objective=jpo, or drop dataset.joint_pairs"
        )
    dropped = 0
    if spec.data == "unpaired":
        if not has_labels:
            mode = dataset_cfg.get("unpaired", "top_bottom")
            kwargs = {"threshold": dataset_cfg.get("unpaired_threshold")} if mode == "threshold" else {}
            records, dropped = to_unpaired(records, mode, **kwargs)
    elif has_labels:
        raise PrefrunError(
            f"dataset {dataset_cfg.name} holds unpaired feedback (prompt, completion, label); "
            f"objective {spec.name} needs {spec.data} data: use objective=kto or objective=bco"
        )
    elif spec.data == "pairwise":
        shortest = min(len(r["responses"]) for r in records)
        if shortest < 2:
            raise PrefrunError(
                f"objective {spec.name} needs pairs but dataset {dataset_cfg.name} has lists of "
                f"{shortest} response(s); use a pairwise or list dataset"
            )
        # Always through to_pairs: it orders each pair chosen-first and drops ties, also when K = 2.
        conditional, dropped = to_pairs(records, dataset_cfg.get("pairs", "best_worst"))
        conditional, counts["identical_pairs"] = drop_identical(conditional)
        if joint_wanted:  # DOVE trains on conditional and joint pairs combined
            conditional += joint_pairs(records, joint_wanted, seed=0)
        records = conditional
        augment = dataset_cfg.get("augment")
        if augment not in (None, "none") and any("prompts" in r for r in records):
            raise PrefrunError(f"dataset.augment={augment} rewrites one prompt per pair; joint pairs have two")
        if augment == "reward_conditioned":
            records = reward_conditioned(records, system_role=dataset_cfg.get("system_role", True))
        elif augment not in (None, "none"):
            raise PrefrunError(f"dataset.augment={augment!r} is unknown; use reward_conditioned or none")
    else:
        short = [i for i, r in enumerate(records) if len(r["responses"]) < spec.min_k]
        if short:
            raise PrefrunError(
                f"objective {spec.name} needs lists of at least {spec.min_k} responses; dataset "
                f"{dataset_cfg.name} row {short[0]} has {len(records[short[0]]['responses'])}; "
                "drop short lists with dataset.min_k"
            )
    advice = spec.advise(records, objective.hparams) if spec.advise and records else None
    if advice:
        log.warning(advice)
    if dropped:
        log.warning(
            "%d prompt(s) of dataset %s yield no %s example (tied scores) and are skipped",
            dropped,
            dataset_cfg.name,
            spec.data,
        )
    counts["tied"] = dropped
    return records, counts
