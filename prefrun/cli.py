"""Command-line entry points: `prefrun` (Hydra) and `prefrun-compare`. Heavy imports happen after composition."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from prefrun.config import CONF_DIR

# Settings of how a run is carried out, not of what it computes: they stay out of the results layout, so one
# experiment lands in one directory on 1 or 8 ranks, quiet or not (env.json records the hardware a run used).
# Hydra's exclude_keys match exact keys only (`hardware` but not `hardware.threads`), hence these prefixes.
NON_RESULT_PREFIXES = ("hardware.", "logger.", "run.", "paths.", "cache.")
# One "key=value" of Hydra's override_dirname (items joined by ","): a comma inside a value (a list) is no split.
_ITEM_START = re.compile(r",(?=[+~]*[A-Za-z_][\w.@/-]*=)")


def _overrides_dir(value: str) -> str:
    """The override part of a run directory: 'default' when nothing beyond the groups was changed.

    Overrides of NON_RESULT_PREFIXES settings are left out. Names past 200 characters (file systems stop at
    255) keep their start and end a hash of the whole.
    """
    items = _ITEM_START.split(value) if value else []
    value = ",".join(item for item in items if not item.lstrip("+~").startswith(NON_RESULT_PREFIXES))
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


HIDDEN_GROUPS = ("hydra", "local")  # Hydra's own (--hydra-help lists them); per-machine settings, loaded by themselves


def _group_options(group: str) -> list[str]:
    """The choices of a config group on Hydra's search path (the app's conf/ and any --config-dir)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    if GlobalHydra.instance().is_initialized():
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group, ObjectType.CONFIG))
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _config_groups(parent: str = "") -> list[str]:
    """Every config group, nested ones by their path (``data/select``)."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        names = GlobalHydra.instance().config_loader().list_groups(parent)
    else:
        names = [p.name for p in (Path(CONF_DIR) / parent).iterdir() if p.is_dir()]
    groups = []
    for name in sorted(names):
        group = f"{parent}/{name}" if parent else name
        groups += [group, *_config_groups(group)]
    return groups


def _help_groups() -> str:
    """`--help`'s group lines: each selectable group and its choices; shared parts (files named _*) are hidden."""
    lines = []
    for group in _config_groups():
        options = [o for o in _group_options(group) if not o.startswith("_")]
        if group not in HIDDEN_GROUPS and options:
            lines.append(f"  {group}: {', '.join(options)}")
    return "\n".join(lines)


def _help_tasks() -> str:
    """`--help`'s task lines: each task and the first comment line of its conf/task/<name>.yaml."""
    lines = []
    for name in _group_options("task"):
        path = Path(CONF_DIR) / "task" / f"{name}.yaml"
        comments = path.read_text().splitlines() if path.is_file() else []
        about = next((c.lstrip("# ").strip() for c in comments if c.startswith("#") and "@package" not in c), "")
        lines.append(f"  {name:13} {about}".rstrip())
    return "\n".join(lines)


if not OmegaConf.has_resolver("prefrun.overrides"):
    OmegaConf.register_new_resolver("prefrun.overrides", _overrides_dir)
    OmegaConf.register_new_resolver("prefrun.curriculum", _curriculum_suffix)
    OmegaConf.register_new_resolver("prefrun.help_groups", _help_groups)
    OmegaConf.register_new_resolver("prefrun.help_tasks", _help_tasks)


def _config_error(e: OmegaConfBaseException) -> None:
    print(
        f"prefrun: error: config: {str(e).splitlines()[0]} ({getattr(e, 'full_key', '')}); "
        "check the key with `prefrun --cfg job`",
        file=sys.stderr,
    )
    sys.exit(2)


def _early_checks(cfg) -> None:  # noqa: ANN001 - Hydra passes a DictConfig
    """What can fail before torch is imported or ranks start (the tasks check the same again, in depth):
    every numeric setting, and a hub model or dataset that is neither cached nor reachable."""
    from prefrun.data.sources import check_hub_dataset
    from prefrun.models.loading import check_model_available
    from prefrun.tasks.settings_check import check_settings

    check_settings(cfg)
    check_model_available(cfg.model)
    check_hub_dataset(cfg.dataset)


def _checked(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Run ``_early_checks`` first: a bad setting fails in a second, with one line, not after the imports."""

    @functools.wraps(task)
    def wrapped(cfg: Any) -> Any:
        from prefrun.errors import PrefrunError

        try:
            _early_checks(cfg)
        except PrefrunError as e:
            print(f"prefrun: error: {e}", file=sys.stderr)
            sys.exit(2)
        except OmegaConfBaseException as e:
            _config_error(e)
        return task(cfg)

    return wrapped


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
        _config_error(e)


def main() -> None:
    import os

    import hydra
    from hydra.errors import HydraException

    from prefrun.errors import PrefrunError
    from prefrun.launch import with_launcher  # N processes (torchrun) or srun's ranks, else this one

    app = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(_checked(with_launcher(_main)))
    # Hydra prints a bad override as several lines and exits 1; raised to here instead, it becomes one line.
    # A user who sets HYDRA_FULL_ERROR gets Hydra's own report.
    full_error = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        app()
    except PrefrunError as e:  # raised during composition-time checks
        print(f"prefrun: error: {e}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # `prefrun --help | head`: the reader has gone; nothing more to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (HydraException, OmegaConfBaseException) as e:
        if full_error:
            raise
        cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else None
        text = one_line(str(e) + ("\n" + str(cause) if cause else ""))
        print(
            f"prefrun: error: config: {text}; see the groups with `prefrun --help`, the keys with `prefrun --cfg job`",
            file=sys.stderr,
        )
        sys.exit(2)


def one_line(text: str) -> str:
    """Hydra's and OmegaConf's multi-line messages as one line: clauses joined by "; ", a listing after a
    line ending in ":" joined by ", ", their full_key / object_type detail lines and search path dropped."""
    parts: list[str] = []
    text = text.split("Config search path:")[0]  # where Hydra looked: its own internals, not the user's mistake
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        if parts and parts[-1].endswith((":", ",")) and not line.endswith(":"):
            parts[-1] = f"{parts[-1].rstrip(',')}{' ' if parts[-1].endswith(':') else ', '}{line},"
        else:
            if parts:
                parts[-1] = parts[-1].rstrip(",")
            parts.append(line.rstrip("."))
    if parts:
        parts[-1] = parts[-1].rstrip(",")
    return "; ".join(parts)


def compare_main() -> None:
    from prefrun.results.compare import main as compare

    sys.exit(compare(sys.argv[1:]))
