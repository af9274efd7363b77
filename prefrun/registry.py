"""One registry shape for the registered things of a run: tasks, reward sources, evaluators, decoders.

    REWARDS = Registry("reward source", modules=("prefrun.rewards.oracle", ...))

    @REWARDS.register("oracle")
    class OracleReward: ...

    REWARDS.get("oracle")        # imports the listed modules on first use, then looks the name up

Entries register themselves when their module is imported; ``modules`` lists those modules, so a lookup
imports them lazily (``--help`` and composition never pay for torch). An unknown name is a one-line
PrefrunError that lists what is available.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from prefrun.errors import PrefrunError


class Registry:
    """Named entries of one kind (``kind`` names it in messages: "reward source", "evaluator")."""

    def __init__(self, kind: str, modules: Iterable[str] = (), config_key: str | None = None) -> None:
        self.kind = kind
        self.config_key = config_key or kind  # how the user selects one, for the error message
        self._modules = tuple(modules)
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(entry: Any) -> Any:
            if name in self._entries and self._entries[name] is not entry:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def _load(self) -> None:
        if not self._loaded:
            for module in self._modules:
                importlib.import_module(module)
            self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._entries:
            raise PrefrunError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())} ({self.config_key}=<name>)"
            )
        return self._entries[name]
