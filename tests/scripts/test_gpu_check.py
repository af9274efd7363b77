"""scripts/gpu_check.py --dry-run: every part of the GPU check runs on CPU at toy sizes and reports a status,
its figures where the CPU has them, and "skipped: needs CUDA" where only a GPU can answer; and the smokes'
judges (error line, engine) read what a failed or half-applied engine really prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_every_part_reports_a_status_and_the_versions(dry_run):
    report, stdout = dry_run
    assert report["dry_run"] is True and report["device"] == "cpu"
    assert set(report["parts"]) == set(gpu_check.PARTS)
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, part["status"])
        assert part["seconds"] > 0
    for package in ("torch", "transformers", "trl", "datasets", "python"):
        assert isinstance(report["versions"][package], str)
    assert report["versions"]["cuda_available"] is False
    assert "1 bf16 DPO" in stdout and "4 smokes" in stdout  # the table


def llama_matmul_params(d: int, inter: int, layers: int, heads: int, kv_heads: int, vocab: int) -> int:
    """A Llama's parameters in matrix products, counted by hand: q, k, v, o, the gated MLP and the two norms
    of each layer, the final norm and the untied LM head (the input embedding is a lookup)."""
    kv = d // heads * kv_heads
    return layers * (2 * d * d + 2 * d * kv + 3 * d * inter + 2 * d) + d + vocab * d


def test_pairwise_training_reports_throughput_and_model_flops_by_the_documented_formula(dry_run):
    part = dry_run[0]["parts"]["train"]
    m = part["model"]
    n = llama_matmul_params(m["hidden"], m["intermediate"], m["layers"], m["heads"], m["kv_heads"], m["vocab_size"])
    rows = part["prompt_len"] + part["response_len"]  # one (prompt, response) row, EOS included
    packed = part["prompt_len"] - 1 + 2 * (1 + part["response_len"])  # prompt once, (last prompt token, response) × 2
    sides = part["runs"]["sdpa"]
    for side, width, shared in (("trl", rows, False), ("prefrun", packed, True), ("prefrun_unpacked", rows, False)):
        r = sides[side]
        assert r["status"] == "ok", r
        assert r["matmul_params"] == n
        assert r["tokens_per_s"] > 0 and r["model_tokens_per_s"] > 0 and r["steps"] == 3
        per_token = r["model_flops_per_s"] / r["model_tokens_per_s"]
        assert per_token == pytest.approx(6 * n + 6 * m["layers"] * m["hidden"] * width, rel=1e-9), side
        assert r["mfu"] is None and r["peak_gpu_gib"] is None  # against a GPU's peak: GPU runs only
        if side != "trl":
            assert r["shared_prompt"] is shared
    assert sides["prefrun_over_trl"]["tokens_per_s"] == pytest.approx(
        sides["prefrun"]["tokens_per_s"] / sides["trl"]["tokens_per_s"]
    )
    probes = part["attention_probes"]
    assert probes["sdpa"]["ok"] is True
    assert set(probes) == {"sdpa", *gpu_check.FLASH_CANDIDATES}
    assert all(isinstance(p["unpadded"], str) for p in probes.values())


def test_listwise_sampler_and_cuda_paths_report_their_figures(dry_run):
    parts = dry_run[0]["parts"]
    sizes = dry_run[0]["sizes"]
    listwise = parts["listwise"]
    k = sizes["list_k"]
    assert listwise["pairs"] == sizes["list_prompts"] * k * (k - 1) // 2
    for side in ("trl_all_pairs", "prefrun_lipo"):
        assert listwise[side]["status"] == "ok" and listwise[side]["prompts_per_s"] > 0
    sampler = parts["sampler"]
    assert sampler["sampler_samples_per_s"] > 0 and sampler["plain_samples_per_s"] > 0
    assert sampler["equal_samples"].endswith(f"/{sizes['sample_prompts'] * sizes['sample_k']}")
    assert set(sampler["median_call_s"]) == {"sampler", "plain"}
    cuda = parts["cuda_paths"]
    udm, poft = cuda["udm_embeddings"], cuda["poft_baselines"]
    assert udm["status"] == "ok" and poft["status"] == "ok"
    assert udm["embedding_shape"] == [sizes["check_examples"], sizes["check_hidden"]]
    assert udm["relative_error_vs_fp32_cpu"] < 1e-6  # both sides fp32 on CPU in the dry run
    assert len(udm["undesirable_weights"]) == sizes["check_examples"] // 2
    assert poft["all_finite"] and poft["responses"] == 3 * sizes["check_examples"]
    assert poft["relative_error_vs_fp32_cpu"] < 1e-6
    assert set(poft["score_s"]) == {"cpu"}  # on a GPU: the device, then the fp32 CPU reference


def test_smokes_run_what_a_cpu_can_and_check_the_engine_was_on(dry_run):
    smokes = dry_run[0]["parts"]["smokes"]
    for name in ("fsdp", "fsdp_torchrun", "zero2", "zero2_torchrun"):
        assert smokes[name]["status"] == "skipped: needs CUDA"
    gc, lora = smokes["gradient_checkpointing"], smokes["lora"]
    assert gc["status"] == "pass" and gc["engine"]["activation_checkpointing"] is True
    assert lora["status"] == "pass" and lora["engine"]["peft"] is True
    assert lora["engine"]["activation_checkpointing"] is False
    assert "hardware.gradient_checkpointing=true" in gc["command"] and "model.peft=lora" in lora["command"]
    assert smokes["summary"] == {"pass": 2, "fail": 0, "skipped": 4}


def test_a_failed_command_is_reported_by_its_exception_line():
    hydra_output = "\n".join(
        [
            "Error executing job with overrides: ['hardware=fsdp', 'hardware.num_processes=1']",
            "Traceback (most recent call last):",
            '  File "transformers/trainer.py", line 478, in __init__',
            '    raise ValueError("Using fsdp only works in distributed training.")',
            "ValueError: Using fsdp only works in distributed training.",
            "",
            "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.",
        ]
    )
    assert gpu_check.stderr_error(hydra_output) == "ValueError: Using fsdp only works in distributed training."
    assert gpu_check.stderr_error("prefrun: error: train.batch_size=3 does not divide\n") == (
        "prefrun: error: train.batch_size=3 does not divide"
    )
    assert gpu_check.stderr_error("killed\n") == "killed"  # no exception line: the last line


def test_a_smoke_whose_engine_was_not_applied_fails():
    ran = {"finished": True, "global_step": 3, "losses": [0.69, 0.68], "fsdp": False, "deepspeed": False}
    ran |= {"distributed_type": "DistributedType.MULTI_CPU", "activation_checkpointing": False, "peft": False}
    assert "FSDP was not applied" in gpu_check.engine_ok("fsdp_torchrun", ran, 3)
    assert "DeepSpeed was not applied" in gpu_check.engine_ok("zero2", ran, 3)
    assert gpu_check.engine_ok("gradient_checkpointing", ran, 3) is not None
    assert gpu_check.engine_ok("fsdp", {**ran, "fsdp": True}, 3) is None
    assert gpu_check.engine_ok("lora", {**ran, "peft": True}, 2) == "trained 3 steps, not 2"
    assert gpu_check.engine_ok("lora", {**ran, "peft": True, "losses": [float("nan")]}, 3).startswith("losses")
