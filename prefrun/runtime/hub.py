"""Is a Hugging Face hub repository usable from here: in the local cache, or the hub reachable?

Without a network, transformers and datasets spend a minute on HTTP retries before failing with several
tracebacks (52.7 s measured for a model preset; 6.4 s with HF_HUB_OFFLINE=1). ``unavailable(repo_id, kind)``
answers in seconds, before anything is loaded: None when the repository is cached or the hub answers,
else the reason (offline mode is on, or the hub gave no answer within ``PROBE_TIMEOUT_S``). The hub is
asked at most once per process, and only when the repository is not cached.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

PROBE_TIMEOUT_S = 5.0  # the whole probe (DNS included): long enough for a slow link, short against 50 s of retries
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "on", "yes", "true"}


def offline_variable(kind: str = "model") -> str | None:
    """The environment variable that turns the hub off for ``kind`` (model | dataset), or None."""
    names = OFFLINE_VARIABLES if kind == "dataset" else OFFLINE_VARIABLES[:2]
    return next((n for n in names if os.environ.get(n, "").strip().lower() in _TRUE), None)


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def datasets_cache_dir() -> Path:
    """Where datasets keeps prepared datasets (its own cache, beside the hub's file cache)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")


def model_cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the hub cache holds ``repo_id``'s config.json at ``revision`` (transformers needs it first)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision or None), str)


def dataset_cached(repo_id: str) -> bool:
    """Whether the hub's file cache or datasets' own cache holds anything of dataset ``repo_id``."""
    snapshots = hub_cache_dir() / f"datasets--{repo_id.replace('/', '--')}" / "snapshots"
    prepared = datasets_cache_dir() / repo_id.replace("/", "___")
    return any(p.is_dir() and any(p.iterdir()) for p in (snapshots, prepared))


@functools.lru_cache(maxsize=4)
def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when ``url``'s server answers (any HTTP status) within ``timeout_s``, else why not."""
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
            outcome.append(None)
        except urllib.error.HTTPError:  # the server answered: it is reachable
            outcome.append(None)
        except (urllib.error.URLError, OSError, ValueError) as e:
            outcome.append(str(getattr(e, "reason", e)))

    thread = threading.Thread(target=ask, daemon=True)  # a hanging DNS lookup ignores socket timeouts
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


def unavailable(repo_id: str, kind: str = "model", revision: str | None = None) -> str | None:
    """None when ``repo_id`` (a ``kind``: model | dataset) can load here; else why it cannot, for a message."""
    cached = model_cached(repo_id, revision) if kind == "model" else dataset_cached(repo_id)
    if cached:
        return None
    where = hub_cache_dir() if kind == "model" else f"{hub_cache_dir()} or {datasets_cache_dir()}"
    variable = offline_variable(kind)
    if variable:
        return f"is not in the local Hugging Face cache ({where}) and offline mode is on ({variable}=1)"
    base = endpoint()
    reason = probe(f"{base}/api/{kind}s/{repo_id}")
    if reason is None:
        return None
    return f"is not in the local Hugging Face cache ({where}) and the hub cannot be reached ({base}: {reason})"
