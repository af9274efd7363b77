"""A hub model that is neither in the local cache nor downloadable fails in seconds with one line.

Before, ``prefrun model=smollm2_135m`` without a network spent 52.7 s on HTTP retries and ended in two
tracebacks (6.4 s and four tracebacks with HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.models.loading import check_model_available, hub_model_id

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"  # conf/model/smollm2_135m.yaml
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def prefrun_without_hub(tmp_path: Path, *args: str, offline: bool) -> tuple[subprocess.CompletedProcess, float]:
    """`prefrun ARGS` with an empty HF_HOME and either offline mode or a hub endpoint nothing listens on."""
    env = {k: v for k, v in os.environ.items() if k not in (*PROXIES, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), WANDB_MODE="offline", HF_DATASETS_OFFLINE="0")
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_DATASETS_CACHE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: connection refused, no network needed
    cmd = [sys.executable, "-m", "prefrun", f"paths.output_dir={tmp_path}/out", "logger=none", *args]
    started = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    return result, time.time() - started


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE=1", "hub unreachable"])
def test_an_uncached_hub_model_without_a_hub_fails_fast_with_one_line(tmp_path, offline):
    result, seconds = prefrun_without_hub(tmp_path, "model=smollm2_135m", offline=offline)
    assert result.returncode == 2
    assert seconds < 15, f"took {seconds:.1f} s"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"prefrun: error: model smollm2_135m ({REPO}) is not in the local Hugging Face cache")
    assert str(tmp_path / "hf") in line
    if offline:
        assert "offline mode is on (HF_HUB_OFFLINE=1)" in line
    else:
        assert "the hub cannot be reached (http://127.0.0.1:9" in line
    assert "model.path=/path/to/SmolLM2-135M-Instruct" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("results.json"))


def _fake_cached_model(cache: Path, repo: str) -> None:
    """The hub cache layout huggingface_hub writes: refs/main -> a snapshot holding config.json."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


def test_a_cached_hub_model_passes_offline_and_an_uncached_one_does_not(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_cached_model(tmp_path, REPO)
    check_model_available(OmegaConf.create({"name": "smollm2_135m", "path": REPO, "revision": "main"}))
    other = OmegaConf.create({"name": "qwen2_5_0_5b", "path": "Qwen/Qwen2.5-0.5B-Instruct", "revision": "main"})
    with pytest.raises(PrefrunError, match=r"^model qwen2_5_0_5b \(Qwen/Qwen2.5-0.5B-Instruct\) is not in the local"):
        check_model_available(other)


def test_local_and_built_in_models_are_not_hub_models(tmp_path):
    assert hub_model_id(OmegaConf.create({"name": "tiny", "path": None, "builtin": True})) is None
    assert hub_model_id(OmegaConf.create({"name": "x", "path": str(tmp_path)})) is None
    assert hub_model_id(OmegaConf.create({"name": "x", "path": "org/name"})) == "org/name"
    with pytest.raises(PrefrunError, match="model.path='/nonexistent/m' does not exist"):
        hub_model_id(OmegaConf.create({"name": "x", "path": "/nonexistent/m"}))
