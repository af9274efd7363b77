"""Command-line entry points: `prefrun` (Hydra) and `prefrun-compare`. Heavy imports happen after composition."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from prefrun.config import CONF_DIR


def _overrides_dir(value: str) -> str:
    """The override part of a run directory: 'default' when nothing beyond the groups was changed.

    Names past 200 characters (file systems stop at 255) keep their start and end a hash of the whole.
    """
    if not value:
        return "default"
    value = value.replace("/", "_")
    if len(value) > 200:
        import hashlib

        value = f"{value[:180]}...{hashlib.sha256(value.encode()).hexdigest()[:12]}"
    return value


def _curriculum_suffix(name: str) -> str:
    """Curriculum runs get their own objective directory: dpo, dpo+score_gap, dpo+iterative."""
    return "" if name == "none" else f"+{name}"


if not OmegaConf.has_resolver("prefrun.overrides"):
    OmegaConf.register_new_resolver("prefrun.overrides", _overrides_dir)
    OmegaConf.register_new_resolver("prefrun.curriculum", _curriculum_suffix)


def _main(cfg) -> float | None:  # noqa: ANN001 - Hydra passes a DictConfig
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:  # a PrefrunError is reported by with_launcher, which wraps this function
        from prefrun.runner import run, summary_table

        results = run(cfg, run_dir, overrides=list(hydra_cfg.overrides.task))
        print(summary_table(results))
        metric = cfg.get("optimized_metric")  # what a sweeper (sweep=optuna) maximises
        return results.get("eval", {}).get(metric) if metric else None
    except OmegaConfBaseException as e:  # a bad or missing config value, found when resolving
        print(
            f"prefrun: error: config: {str(e).splitlines()[0]} ({getattr(e, 'full_key', '')}); "
            "check the key with `prefrun --cfg job`",
            file=sys.stderr,
        )
        sys.exit(2)


def main() -> None:
    import hydra

    from prefrun.errors import PrefrunError
    from prefrun.launch import with_launcher  # N processes (torchrun) or srun's ranks, else this one

    app = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(with_launcher(_main))
    try:
        app()
    except PrefrunError as e:  # raised during composition-time checks
        print(f"prefrun: error: {e}", file=sys.stderr)
        sys.exit(2)


def compare_main() -> None:
    from prefrun.results.compare import main as compare

    sys.exit(compare(sys.argv[1:]))
