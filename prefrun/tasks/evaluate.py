"""The evaluate task: evaluate finished runs after the fact, from their saved policies.

    prefrun task=evaluate runs=outputs/lipo_vs_dpo 'eval=[preference,judge]' reward=judge reward.model=tiny

``runs`` is a run directory, a folder holding runs (every results.json below it), or a glob. Each run is
evaluated with its own data, objective, model settings and reference, and the evaluators, reward source
and sampling settings of this command; the figures go to ``<run>/eval/<evaluator>.json``, never into
the run's results.json. A run whose evaluation file already holds the same settings is skipped (a
killed evaluation resumes); ``run.overwrite=true`` evaluates again.

``decode=<name>`` (prefrun.decoding) draws the policy's answers of ``eval=oracle`` with that decoder, the
reference's staying plain samples, into ``<run>/eval/oracle.<decoder>.json``:

    prefrun task=evaluate runs=outputs/default decode=bon decode.n=8

``eval=tournament`` (prefrun.evaluation.tournament_eval) runs after the per-run evaluators, across all runs:
runs × ``tournament.decoders`` (+ the reference) in one tournament, written into this command's directory.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.errors import PrefrunError
from prefrun.evaluation import tournament_eval
from prefrun.objectives.config import build_objective
from prefrun.results.files import write_json
from prefrun.tasks import TASKS
from prefrun.tasks.base import RunContext
from prefrun.tasks.steps import evaluate_policy, flat_metrics, selected_evaluators

EVAL_DIR = "eval"
DECODED = ("oracle",)  # evaluators whose policy answers come from ``decode=``


def _decode(cfg: DictConfig) -> DictConfig | None:
    """The ``decode`` block when it names a decoder other than plain sampling, else None (today's behaviour)."""
    decode = cfg.get("decode")
    return decode if decode is not None and decode.get("name", "sample") != "sample" else None


def _eval_file(name: str, decode: DictConfig | None) -> str:
    return f"{name}.json" if decode is None or name not in DECODED else f"{name}.{decode.name}.json"


def finished_runs(pattern: str) -> list[Path]:
    """Run directories named by ``pattern`` (a run, a folder of runs, or a glob) that hold results.json."""
    roots = [Path(p) for p in sorted(glob.glob(str(Path(pattern).expanduser())))] or [Path(pattern).expanduser()]
    found: list[Path] = []
    for root in roots:
        if (root / "results.json").is_file():
            found.append(root)
        elif root.is_dir():
            found.extend(sorted(p.parent for p in root.rglob("results.json") if ".cache" not in p.parts))
    # Policies only: an evaluation's own directory and a reward model's run (task=reward_model) hold none.
    runs = [
        r
        for r in dict.fromkeys(found)
        if json.loads((r / "results.json").read_text()).get("task") not in ("evaluate", "reward_model")
    ]
    if not runs:
        raise PrefrunError(
            f"runs={pattern!r}: no finished run (a directory with results.json) there; "
            "give a run directory, a folder of runs or a glob"
        )
    return runs


def _settings_key(cfg: DictConfig, name: str) -> str:
    """What an evaluation's figures depend on beyond the run: its settings, the reward source, the sampler."""
    blob = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("reward", "generation")}
    blob["evaluator"] = OmegaConf.to_container(cfg.eval[name], resolve=True) if name in cfg.eval else {}
    blob["split"], blob["seed"] = cfg.eval.get("split", "test"), cfg.seed
    if name in DECODED and _decode(cfg) is not None:
        blob["decode"] = OmegaConf.to_container(cfg.decode, resolve=True)
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@TASKS.register("evaluate")
class EvaluateTask:
    name = "evaluate"
    stage_labels = {"eval_s": "eval", "tournament_s": "tournament"}

    def check(self, cfg: DictConfig) -> None:
        from prefrun.evaluation import EVALUATORS
        from prefrun.tasks.settings_check import check_settings

        check_settings(cfg)  # the evaluators', sampler's and reward source's settings, before any run loads
        if not selected_evaluators(cfg.eval) and not tournament_eval.selected(cfg):
            raise PrefrunError("task=evaluate needs evaluators: eval=[preference] or eval=[judge], ...")
        for name in selected_evaluators(cfg.eval):
            EVALUATORS.get(name)
        self.check_decode(cfg)
        run_dirs = finished_runs(str(cfg.runs))
        for run_dir in run_dirs:
            if not (run_dir / "model").is_dir():
                raise PrefrunError(
                    f"{run_dir} has no saved model (model/): it ran with run.save_model=false or before prefrun "
                    "saved policies; train it again to evaluate it"
                )
        if tournament_eval.selected(cfg):
            tournament_eval.check(cfg, run_dirs)
            from prefrun.tasks.settings_check import check_value, count

            for key, rule in (
                ("prompts", count(1, "held-out prompts each player answers", "32")),
                ("max_new_tokens", count(1, "tokens per answer", "24")),
                ("bootstrap", count(0, "bootstrap resamples; 0 = no intervals", "1000")),
                ("seed", count(0, "a random seed", "1234")),
            ):
                check_value(f"tournament.{key}", cfg.tournament.get(key), rule)

    @staticmethod
    def check_decode(cfg: DictConfig) -> None:
        """The decoder builds from its settings, has a reward source if it needs one, and an evaluator uses it."""
        from prefrun.decoding import build_decoder

        decode = _decode(cfg)
        if decode is None:
            return
        has_source = decode.get("reward") is not None or bool((cfg.get("reward") or {}).get("name"))
        build_decoder(decode, reward=(lambda: None) if has_source else None)
        plain = [n for n in selected_evaluators(cfg.eval) if n in ("reward", "judge")]
        used = tournament_eval.selected(cfg) or any(n in DECODED for n in selected_evaluators(cfg.eval))
        if plain or not used:
            fix = f"eval={plain[0]} samples plainly: drop it" if plain else "add eval=oracle"
            raise PrefrunError(
                f"decode={decode.name} draws the policy's answers of eval=oracle only (and of eval=tournament "
                f"through tournament.decoders); {fix}"
            )

    def prepare(self, cfg: DictConfig) -> None:
        """Nothing to share across ranks: each evaluation loads its own run."""

    def run(self, cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
        evaluated: dict[str, Any] = {}
        with ctx.stage("eval_s"):
            run_dirs = finished_runs(str(cfg.runs))
            for run_dir in run_dirs:
                evaluated[str(run_dir)] = self.evaluate_run(cfg, run_dir, ctx)
        out: dict[str, Any] = {"objective": "evaluate", "runs": evaluated}
        if tournament_eval.selected(cfg):
            with ctx.stage("tournament_s"):
                out["tournament"] = tournament_eval.run_tournament(
                    cfg, run_dirs, ctx.run_dir, ctx.device, ctx.main_process
                )
        return out

    def evaluate_run(self, cfg: DictConfig, run_dir: Path, ctx: RunContext) -> dict[str, Any]:
        """One finished run, with this command's evaluators; {evaluator: {metrics, rows, ...}}."""
        from prefrun.data.sources import build_data
        from prefrun.models.loading import load_model, load_tokenizer

        names = selected_evaluators(cfg.eval)
        decode = _decode(cfg)
        keys = {name: _settings_key(cfg, name) for name in names}
        out: dict[str, Any] = {}
        todo = []
        for name in names:
            path = run_dir / EVAL_DIR / _eval_file(name, decode)
            if path.is_file() and not cfg.run.overwrite:
                previous = json.loads(path.read_text())
                if previous.get("settings_key") == keys[name]:
                    out[name] = previous
                    continue
            todo.append(name)
        if not todo:
            return out
        run_cfg = OmegaConf.load(run_dir / "config.yaml")
        results = json.loads((run_dir / "results.json").read_text())
        reference_path = results.get("reference_path")
        if not reference_path or not Path(reference_path).exists() and reference_path.startswith(("/", ".")):
            raise PrefrunError(f"{run_dir}: its reference model ({reference_path}) is gone; rerun it to rebuild it")
        # The run's data, model and lengths; this command's evaluators, reward source, sampler and caches.
        merged = run_cfg.copy()
        for key in ("reward", "generation", "paths"):
            merged[key] = cfg[key]
        kept = [k for k in cfg.eval if k in todo or not isinstance(cfg.eval[k], DictConfig)]
        merged.eval = OmegaConf.create({k: cfg.eval[k] for k in kept})
        for name in todo:
            if name in DECODED and decode is not None:  # the decoder rides in the evaluator's own settings
                settings = OmegaConf.to_container(decode, resolve=True)
                merged.eval[name].decode = {**settings, "cache_dir": str(cfg.paths.cache_dir)}
        data = build_data(merged.dataset, merged.seed, eval_split=cfg.eval.get("split", "test"))
        policy = load_model(str(run_dir / "model"), merged.model, ctx.device).to(ctx.device).eval()
        tokenizer = load_tokenizer(str(run_dir / "model"), merged.model)
        per_evaluator, rows = evaluate_policy(
            merged,
            policy=policy,
            tokenizer=tokenizer,
            reference_path=reference_path,
            data=data,
            objective=build_objective(merged.objective),
            device=ctx.device,
        )
        for name, metrics in per_evaluator.items():
            entry = {
                "metrics": flat_metrics({name: metrics}),
                "rows": [[r.label, r.reference, r.policy] for r in rows[name]],
                "settings_key": keys.get(name, _settings_key(cfg, name)),
                "evaluator": name,
            }
            if ctx.main_process:
                write_json(run_dir / EVAL_DIR / _eval_file(name, decode), entry)
            out[name] = entry
        return out

    @staticmethod
    def summary(results: dict[str, Any]) -> str:
        """One table over the runs: each run's path (below what they share), then its evaluators' rows."""
        import os

        runs = list(results["runs"])
        common = os.path.commonpath(runs) if len(runs) > 1 else str(Path(runs[0]).parent) if runs else ""
        lines = [f"prefrun: evaluated {len(runs)} run(s) under {common}"]
        if any(results["runs"].values()):  # a tournament alone has no per-run figures
            lines.append(f"{'':22}{'reference':>16}{'policy':>10}")
            for run_dir, evaluations in results["runs"].items():
                lines.append(os.path.relpath(run_dir, common) if common else run_dir)
                for entry in evaluations.values():
                    for label, reference, policy in entry["rows"]:
                        lines.append(f"  {label:20}{reference:>16}{policy:>10}")
        lines.append(f"wall time {results['timings']['wall_s']:.1f}s; figures in <run>/{EVAL_DIR}/<evaluator>.json")
        if "tournament" in results:
            from prefrun.evaluation.tournament_eval import table

            lines += ["", "tournament (tournament.json, tournament.png in this command's directory):"]
            lines.append(table(results["tournament"]))
        return "\n".join(lines)
