"""``task=evaluate runs=<glob> eval=tournament``: rank runs and decoders on top of them in one tournament.

Players are every run (its saved policy) under every decoder of ``tournament.decoders`` (``run:sample``,
``run:bon``), and the SFT reference (``reference``) when ``tournament.include_reference``. Each player answers
the same ``tournament.prompts`` held-out prompts once (the ``generation`` block's sampler, seeded with
``tournament.seed``; a decoder named by ``decode=`` takes that block's settings, ``decode.n=8``, the others
their conf/decode defaults). On each prompt the answers meet by ``tournament.schedule`` (bracket, anchored or
round_robin; prefrun.evaluation.tournament), each match judged by the reward source's preference
(``reward=``: the oracle, a judge, ...) under ``tournament.swap``, on top of the source's own protocol (a
decoder that ranks by a reward source, ``bon``, uses ``decode.reward`` or else this judge):

    outcome(a, b | x) = prefer(x, [y_a, y_b])[0, 1]      (an unjudged pair, NaN, counts as a tie)

All matches are pooled into the Bradley–Terry fit (``rate``: FastChat's MLE Elo) with percentile-bootstrap
95% intervals, resampling prompts (``tournament.resample=prompts``, a cluster bootstrap: the matches on one
prompt share its answers) or matches. ``tournament.budget`` caps the judge calls (null = every prompt).

Written into the evaluate command's own directory: ``tournament.json`` (players, schedule, judge calls,
matches, ratings with intervals, each decoder's cost report), ``tournament.md`` (the ratings table) and
``tournament.png`` (ratings with their intervals).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prefrun.errors import PrefrunError

DECODE_CONF = Path(__file__).resolve().parents[1] / "conf" / "decode"
REFERENCE = "reference"
RESAMPLES = ("prompts", "matches")


def decoder_config(name: str, cfg: DictConfig) -> DictConfig:
    """``decode=``'s block when it names ``name`` (so ``decode.n=8`` applies), else conf/decode/<name>.yaml."""
    chosen = cfg.get("decode")
    if chosen is not None and chosen.get("name") == name:
        return chosen
    path = DECODE_CONF / f"{name}.yaml"
    if not path.is_file():
        from prefrun.decoding import DECODERS

        DECODERS.get(name)  # an unknown name: the registry's one-line error
        raise PrefrunError(f"tournament.decoders: decoder {name!r} has no conf/decode/{name}.yaml")
    return OmegaConf.load(path)


def _label(run_dirs: list[Path]) -> dict[Path, str]:
    """Each run's name: its path below what the runs share (its folder name when there is one run)."""
    if len(run_dirs) == 1:
        return {run_dirs[0]: run_dirs[0].name}
    common = os.path.commonpath([str(r) for r in run_dirs])
    return {r: os.path.relpath(r, common) for r in run_dirs}


def selected(cfg: DictConfig) -> bool:
    """``eval=[..., tournament]`` composed: its settings sit at the top level, ``tournament:``."""
    return isinstance(cfg.get("tournament"), DictConfig)


def player_count(cfg: DictConfig, run_dirs: list[Path]) -> int:
    settings = cfg.tournament
    return len(run_dirs) * len(list(settings.get("decoders") or [])) + bool(settings.get("include_reference", True))


def check(cfg: DictConfig, run_dirs: list[Path]) -> None:
    """The tournament's settings, before any model loads: players ≥ 2, known decoders, schedule and resampling."""
    from prefrun.evaluation.tournament import SCHEDULES, SWAPS

    settings = cfg.tournament
    for name in settings.get("decoders") or []:
        decoder_config(str(name), cfg)
    n = player_count(cfg, run_dirs)
    if n < 2:
        raise PrefrunError(
            f"eval=tournament has {n} player(s) ({len(run_dirs)} run(s) × tournament.decoders, reference "
            f"{'in' if settings.get('include_reference', True) else 'out'}); a tournament needs at least 2: "
            "add runs, decoders (tournament.decoders=[sample,bon]) or tournament.include_reference=true"
        )
    rules = (
        ("schedule", settings.get("schedule"), SCHEDULES),
        ("swap", settings.get("swap"), SWAPS),
        ("resample", settings.get("resample"), RESAMPLES),
    )
    for key, value, allowed in rules:
        if value not in allowed:
            raise PrefrunError(f"tournament.{key}={value!r}: must be one of {', '.join(allowed)}")
    budget = settings.get("budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise PrefrunError(f"tournament.budget={budget!r}: must be an integer ≥ 1 (judge calls) or null (every prompt)")


def answers(cfg: DictConfig, run_dirs: list[Path], device: str) -> tuple[list[Any], dict[str, list[str]], dict, Any]:
    """(prompts, {player: [answer per prompt]}, {player: decoder report}, the judge's reward source)."""
    import json

    from prefrun.data.sources import build_data
    from prefrun.decoding import build_decoder
    from prefrun.generation import encode_prompts, settings_from_config
    from prefrun.models.loading import load_model, load_tokenizer
    from prefrun.rewards import RewardContext, build_reward

    settings = cfg.tournament
    sampling = settings_from_config(
        cfg.generation, n=1, seed=int(settings.seed), max_new_tokens=int(settings.max_new_tokens)
    )
    prompts, source, texts, reports, references = None, None, {}, {}, {}
    labels = _label(run_dirs)
    for run_dir in run_dirs:
        run_cfg = OmegaConf.load(run_dir / "config.yaml")
        data = build_data(run_cfg.dataset, run_cfg.seed, eval_split=cfg.eval.get("split", "test"))
        mine = list(data.eval_prompts[: int(settings.prompts)])
        if prompts is None:
            prompts = mine
            context = RewardContext(
                oracle=data.reward_fn,
                device=device,
                cache_dir=str(cfg.paths.cache_dir),
                words=data.words,
                seed=cfg.seed,
            )
            source = build_reward(cfg.reward, context)
        elif mine != prompts:
            raise PrefrunError(
                f"eval=tournament: {run_dir} holds out other prompts than {run_dirs[0]}; players must answer the "
                "same prompts: run the tournament over runs of one dataset"
            )
        if not prompts:
            raise PrefrunError(f"eval=tournament: {run_dir}'s dataset has no held-out prompts")
        tokenizer = load_tokenizer(str(run_dir / "model"), run_cfg.model)
        prompt_ids = encode_prompts(tokenizer, prompts, int(run_cfg.train.max_prompt_len))
        policy = load_model(str(run_dir / "model"), run_cfg.model, device).to(device).eval()
        for name in settings.decoders:
            decode_cfg = decoder_config(str(name), cfg)
            own = decode_cfg.get("reward")  # the decoder's own source, else the judge's

            def reward(own: Any = own, judge: Any = source, context: Any = context) -> Any:
                return judge if own is None else build_reward(own, context)

            decoder = build_decoder(decode_cfg, reward=reward)
            decoded = decoder.decode(policy, tokenizer, prompts, prompt_ids, sampling)
            player = f"{labels[run_dir]}:{name}"
            texts[player], reports[player] = [row[0] for row in decoded.samples.texts], decoded.report
        reference_path = json.loads((run_dir / "results.json").read_text()).get("reference_path")
        if settings.get("include_reference", True) and reference_path and reference_path not in references:
            references[reference_path] = (run_cfg.model, tokenizer, prompt_ids)
        del policy
    for k, (path, (model_cfg, tokenizer, prompt_ids)) in enumerate(references.items()):
        reference = load_model(path, model_cfg, device).to(device).eval()
        decoded = build_decoder(OmegaConf.create({"name": "sample"})).decode(
            reference, tokenizer, prompts, prompt_ids, sampling
        )
        player = REFERENCE if len(references) == 1 else f"{REFERENCE} {k + 1}"
        texts[player], reports[player] = [row[0] for row in decoded.samples.texts], decoded.report
    if len(texts) < 2:
        raise PrefrunError(f"eval=tournament has {len(texts)} player(s) with answers; a tournament needs at least 2")
    return prompts, texts, reports, source


def play(settings: DictConfig, prompts: list[Any], texts: dict[str, list[str]], source: Any) -> dict[str, Any]:
    """Matches by the schedule, judged by ``source.prefer``, and the ratings with intervals."""
    from prefrun.evaluation.tournament import SCHEDULES, SWAPS, matches_per_prompt, rate

    players = list(texts)
    per_prompt = matches_per_prompt(str(settings.schedule), len(players))
    unjudged = [0]

    def judge_of(b: int):
        def judge(first: str, second: str) -> float:
            p = float(source.prefer([prompts[b]], [[texts[first][b], texts[second][b]]])[0, 0, 1])
            if math.isnan(p):
                unjudged[0] += 1
                return 0.5
            return p

        return judge

    budget = settings.get("budget")
    budget = len(prompts) * per_prompt * SWAPS[str(settings.swap)] if budget is None else int(budget)
    schedule = SCHEDULES[str(settings.schedule)]
    kwargs = {"anchor": settings.get("anchor")} if settings.schedule == "anchored" else {}
    judges = (judge_of(b) for b in range(len(prompts)))
    matches, calls = schedule(players, judges, budget, swap=str(settings.swap), seed=int(settings.seed), **kwargs)
    on_prompt = [k // per_prompt for k in range(len(matches))]
    ratings = rate(
        matches,
        bootstrap=int(settings.bootstrap),
        seed=int(settings.seed),
        anchor=settings.get("anchor"),
        groups=on_prompt if settings.resample == "prompts" else None,
    )
    return {
        "players": players,
        "schedule": str(settings.schedule),
        "swap": str(settings.swap),
        "prompts": len(set(on_prompt)),
        "judge": getattr(source, "name", ""),
        "judge_calls": calls,
        "unjudged": unjudged[0],
        "matches": [[a, b, o, p] for (a, b, o), p in zip(matches, on_prompt)],
        "ratings": {p: {"rating": r, "low": lo, "high": hi} for p, (r, lo, hi) in ratings.items()},
    }


def table(result: dict[str, Any]) -> str:
    """The ratings, best first, as a markdown table."""
    lines = ["| player | Elo | 95% low | 95% high |", "|---|---|---|---|"]
    for player, r in sorted(result["ratings"].items(), key=lambda kv: -kv[1]["rating"]):
        lines.append(f"| {player} | {r['rating']:.0f} | {r['low']:.0f} | {r['high']:.0f} |")
    lines.append(
        f"\n{result['schedule']} schedule, swap={result['swap']}, {result['prompts']} prompts, "
        f"{len(result['matches'])} matches, {result['judge_calls']} judge calls ({result['judge']})"
    )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Ratings with their 95% intervals, one row per player, best on top."""
    from prefrun.results.plots import _figure, _save

    ranked = sorted(result["ratings"].items(), key=lambda kv: kv[1]["rating"])
    fig, (ax,) = _figure(7.0, 1.2 + 0.4 * len(ranked))
    for i, (_, r) in enumerate(ranked):
        low, high = r["low"], r["high"]
        err = [[r["rating"] - low], [high - r["rating"]]] if not math.isnan(low) else None
        ax.errorbar([r["rating"]], [i], xerr=err, fmt="o", color="tab:blue", capsize=4)
    ax.set_yticks(range(len(ranked)), [p for p, _ in ranked], fontsize=8)
    ax.axvline(1000.0, color="grey", linewidth=0.8, linestyle=":")
    calls = result["judge_calls"]
    title = f"{result['schedule']} tournament: Bradley–Terry Elo, 95% bootstrap intervals ({calls} judge calls)"
    ax.set(xlabel=f"Elo (judge: {result['judge']})", title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def run_tournament(cfg: DictConfig, run_dirs: list[Path], run_dir: Path, device: str, write: bool) -> dict[str, Any]:
    """The whole tournament; writes tournament.json, .md and .png into ``run_dir`` when ``write``."""
    from prefrun.results.files import write_atomic, write_json

    settings = cfg.tournament
    prompts, texts, reports, source = answers(cfg, run_dirs, device)
    result = play(settings, prompts, texts, source)
    result["decoders"] = {player: reports[player] for player in result["players"]}
    result["runs"] = [str(r) for r in run_dirs]
    result["prompt_texts"], result["answers"] = prompts, texts  # what was judged, to read or recheck
    if write:
        write_json(run_dir / "tournament.json", result)
        write_atomic(run_dir / "tournament.md", table(result) + "\n")
        plot(result, run_dir / "tournament.png")
    return result
