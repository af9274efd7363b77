"""task=evaluate with decoders and tournaments, end to end on two tiny saved sort runs.

``decode=bon`` writes the policy's best-of-N figures next to (not over) the plain ones; ``eval=tournament``
plays runs × decoders and the reference on the same prompts, judged by the oracle, and every match's outcome
is recomputed here from the oracle's rewards of the stored answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CONF, MICRO_RUN, compose_cfg

from prefrun.data.synthetic import oracle_reward
from prefrun.errors import PrefrunError
from prefrun.runner import run, summary_table


def decode_choice(name: str) -> str:
    """``decode=<name>``, appended (``+``) while the defaults list has no decode group yet."""
    listed = any(line.strip().startswith("- decode:") for line in (Path(CONF) / "config.yaml").read_text().splitlines())
    return f"decode={name}" if listed else f"+decode={name}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two finished runs with saved policies (2 and 4 DPO steps from one cached SFT reference)."""
    tmp = tmp_path_factory.mktemp("tournament")
    for steps in (2, 4):
        overrides = [*(o for o in MICRO_RUN if not o.startswith("eval.")), f"train.steps={steps}", "eval=none"]
        run(compose_cfg(tmp, *overrides), tmp / "out" / "runs" / f"steps{steps}", overrides=overrides)
    return tmp


def evaluate(tmp: Path, name: str, *overrides: str, runs: str = "out/runs") -> dict:
    overrides = ("logger=none", "task=evaluate", f"runs={tmp / runs}", *overrides)
    return run(compose_cfg(tmp, *overrides), tmp / "out" / "evaluate" / name, overrides=list(overrides))


def test_decode_bon_writes_the_policys_best_of_n_beside_the_plain_figures(runs):
    evaluate(runs, "plain", "eval=[oracle]", "eval.oracle.prompts=8")
    results = evaluate(
        runs,
        "bon",
        "eval=[oracle]",
        "eval.oracle.prompts=8",
        decode_choice("bon"),
        "decode.n=4",
        "decode.calibration=4",
    )
    for run_dir in (runs / "out" / "runs").iterdir():
        plain = json.loads((run_dir / "eval" / "oracle.json").read_text())["metrics"]
        best = json.loads((run_dir / "eval" / "oracle.bon.json").read_text())["metrics"]
        assert "decode/n" not in plain and best["decode/n"] == 4.0 and best["decode/prefills"] == 1.0
        assert plain["reference/oracle_reward"] == best["reference/oracle_reward"]  # the reference is plain
        assert best["decode/reward_calls"] == pytest.approx(1 / 8)  # one batched scoring of 8 prompts × 4
    assert "KL bound (vs policy)" in summary_table(results)


def test_a_tournament_of_runs_decoders_and_the_reference_judged_by_the_oracle(runs):
    results = evaluate(
        runs,
        "tournament",
        "eval=[tournament]",
        "tournament.prompts=6",
        "tournament.bootstrap=50",
        "tournament.decoders=[sample,bon]",
        decode_choice("bon"),
        "decode.n=2",
        "decode.calibration=0",
    )
    out = runs / "out" / "evaluate" / "tournament"
    t = json.loads((out / "tournament.json").read_text())
    assert sorted(t["players"]) == sorted(["reference", "steps2:sample", "steps2:bon", "steps4:sample", "steps4:bon"])
    assert t["schedule"] == "bracket" and t["prompts"] == 6
    assert len(t["matches"]) == 6 * 4 and t["judge_calls"] == 2 * len(t["matches"])  # swap=both: 2 calls a match
    for a, b, outcome, p in t["matches"]:
        ra, rb = (oracle_reward(t["prompt_texts"][p], t["answers"][x][p]) for x in (a, b))
        assert outcome == (1.0 if ra > rb else 0.0 if ra < rb else 0.5)
    for player, r in t["ratings"].items():
        assert r["low"] <= r["rating"] <= r["high"], player
    assert t["decoders"]["steps2:bon"]["n"] == 2.0 and "n" not in t["decoders"]["steps2:sample"]
    assert (out / "tournament.png").stat().st_size > 0 and "| player | Elo |" in (out / "tournament.md").read_text()
    assert "tournament" in summary_table(results)


def test_a_tournament_needs_two_players_and_saved_policies(runs, tmp_path):
    one = ["eval=[tournament]", "tournament.decoders=[sample]", "tournament.include_reference=false"]
    with pytest.raises(PrefrunError, match=r"eval=tournament has 1 player\(s\).*at least 2"):
        evaluate(runs, "one", *one, runs="out/runs/steps2")
    copy = tmp_path / "runs" / "unsaved"
    copy.mkdir(parents=True)
    for name in ("results.json", "config.yaml"):
        shutil.copy(runs / "out" / "runs" / "steps2" / name, copy / name)
    with pytest.raises(PrefrunError, match=r"has no saved model \(model/\)"):
        evaluate(runs, "unsaved", "eval=[tournament]", runs=str(copy))


def test_decode_n_zero_is_a_one_line_error_before_any_run_loads(runs):
    with pytest.raises(PrefrunError, match=r"^decode\.n=0: must be an integer ≥ 1"):
        evaluate(runs, "zero", "eval=[oracle]", decode_choice("bon"), "decode.n=0")
