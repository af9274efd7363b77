"""Process lifecycle of a run: multi-process launch, rank-0 checks, preemption-safe checkpoints.

Launch. ``prefrun hardware=ddp hardware.num_processes=N ...`` is one command: the process the user
started composes the config, prepares everything that must happen once (run-directory checks, data,
the tiny model, the cached SFT reference) and then re-invokes the same Hydra command line in N
workers through ``torch.distributed.run`` (``hydra.run.dir`` pinned to the resolved run directory,
``PREFRUN_WORKER=1`` so they do not relaunch). Under SLURM (``srun`` set ``SLURM_PROCID`` and more
than one task) the ranks already exist: their torch.distributed variables come from SLURM's, rank 0
prepares while the others wait, and nothing is launched. Ranks started by the user's own
``torchrun -m prefrun ...`` are treated the same way.

Inside the workers, accelerate/transformers' Trainer does the distributed work (gloo on CPU, NCCL on
GPU, FSDP or DeepSpeed when the hardware group says so). Only rank 0 writes config, results,
metrics.jsonl and W&B. Reference log-probs: rank 0 computes them and stores them in the reference
cache while the other ranks wait, then they load them from the cache (see ``rank0_first``); with
``cache.reference=off`` every rank computes the same deterministic values itself.

Checkpoints. ``run.checkpoint_steps=N`` makes the Trainer write ``checkpoints/checkpoint-<step>``
(weights, optimizer, scheduler, RNG states, trainer state; ``trainer_state.json`` last).
``last_complete_checkpoint`` only accepts a directory whose trainer_state.json parses and names its
step, so a checkpoint torn by a kill is never resumed. SIGTERM / SIGUSR1 (SLURM preemption or
time-out) make every rank save a checkpoint at the end of the current step and exit with
``PREEMPT_EXIT_CODE``; the same command run again resumes from the last complete checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefrun.errors import PrefrunError

log = logging.getLogger("prefrun")

WORKER_ENV = "PREFRUN_WORKER"
PREEMPT_EXIT_CODE = 75  # EX_TEMPFAIL: "try again" - rerun the same command to resume
PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")
CHECKPOINT_DIR = "checkpoints"
DIST_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)


# --- ranks and batch layout --------------------------------------------------------------------------
def world_size(cfg: Any) -> int:
    """Processes of the run: hardware.num_processes (per node) × hardware.num_nodes."""
    hw = cfg.hardware
    return max(1, int(hw.get("num_processes", 1))) * max(1, int(hw.get("num_nodes", 1)))


def batch_layout(cfg: Any) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) for the global ``train.batch_size``.

    The global batch is what the experiment sets; the hardware only splits it, so changing the number
    of processes keeps the optimisation identical. ``hardware.per_device_batch_size`` (optional) caps
    what one device holds; the rest becomes gradient accumulation.
    """
    world = world_size(cfg)
    global_batch = int(cfg.train.batch_size)
    if global_batch % world:
        raise PrefrunError(
            f"train.batch_size={global_batch} does not divide over {world} processes "
            f"(hardware.num_processes={cfg.hardware.num_processes} x hardware.num_nodes={cfg.hardware.num_nodes}); "
            f"use a multiple of {world}"
        )
    per_rank = global_batch // world
    per_device = cfg.hardware.get("per_device_batch_size") or per_rank
    if per_device <= 0 or per_rank % per_device:
        raise PrefrunError(
            f"hardware.per_device_batch_size={per_device} does not divide the {per_rank} examples per process "
            f"(train.batch_size={global_batch} over {world} processes)"
        )
    return per_device, per_rank // per_device


def rank() -> int:
    """This process's global rank (0 outside distributed runs); readable before torch.distributed starts."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


@contextlib.contextmanager
def rank0_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. computes and caches reference log-probs), then the others run it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


# --- launching ---------------------------------------------------------------------------------------
def _slurm_ranks() -> bool:
    """Inside a multi-task srun step: SLURM started the ranks."""
    return "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def _external_ranks() -> bool:
    """Ranks started by someone else: srun, or the user's own torchrun / accelerate launch."""
    return os.environ.get(WORKER_ENV) != "1" and (_slurm_ranks() or "WORLD_SIZE" in os.environ)


def _slurm_master_addr() -> str:
    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST") or ""
    if shutil.which("scontrol") and nodes:
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    head = nodes.split(",")[0]
    if "[" in head:  # node[01-04] -> node01
        prefix, rest = head.split("[", 1)
        head = prefix + rest.split("-")[0].split(",")[0].rstrip("]")
    return head or "127.0.0.1"


def set_env_from_slurm() -> None:
    """torch.distributed's variables from srun's (a variable already set wins)."""
    env = os.environ
    ntasks = int(env["SLURM_NTASKS"])
    nnodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    env.setdefault("RANK", env["SLURM_PROCID"])
    env.setdefault("WORLD_SIZE", str(ntasks))
    env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
    env.setdefault("LOCAL_WORLD_SIZE", str(ntasks // max(1, nnodes)))
    env.setdefault("NODE_RANK", env.get("SLURM_NODEID", "0"))
    env.setdefault("MASTER_ADDR", _slurm_master_addr())
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))


@contextlib.contextmanager
def _single_process_env() -> Iterator[None]:
    """Hide the distributed variables (so a cache-filling SFT stage trains in one process), then restore them."""
    saved = {k: os.environ.pop(k) for k in DIST_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
        try:  # forget the single-process state accelerate built meanwhile
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        except ImportError:  # pragma: no cover
            pass


def prepare(cfg: Any, run_dir: Path) -> None:
    """What must happen once, in one process, before ranks start: checks, data, models, the SFT reference.

    Mirrors the first half of ``prefrun.run.run`` (same helpers, same cache keys); the ranks then find
    the tiny model and SFT reference cached instead of training them N times in a distributed job.
    """
    from prefrun.run import build_objective, check_run_dir, records_fingerprint, shape_for_objective

    objective = build_objective(cfg.objective)
    batch_layout(cfg)
    check_run_dir(run_dir, cfg)
    reset_run_dir(run_dir, cfg)

    from prefrun.data.sources import build_data
    from prefrun.models.loading import base_model_path
    from prefrun.trainers.sft_stage import run_sft

    data = build_data(cfg.dataset, cfg.seed)
    if data.train:
        shape_for_objective(data.train, objective, cfg.dataset)  # its errors, before N processes start
    cache_dir = Path(cfg.paths.cache_dir)
    base = base_model_path(cfg.model, data.words, cache_dir / "models")
    sft_enabled = cfg.sft.enabled
    if sft_enabled == "auto":
        sft_enabled = data.sft is not None
    if sft_enabled and data.sft is not None:  # keep in step with prefrun.run.run (the SFT cache key)
        sft_cfg = {k: cfg.sft[k] for k in ("steps", "batch_size", "lr", "warmup_steps")}
        sft_cfg.update(seed=0, max_prompt_len=cfg.train.max_prompt_len, max_response_len=cfg.train.max_response_len)
        run_sft(base, data.sft, sft_cfg, cache_dir / "sft", records_fingerprint(data.sft))


def _hydra_command(hydra_cfg: Any, run_dir: Path) -> list[str]:
    """The same prefrun command line, pinned to ``run_dir``: config sources, config name, task overrides."""
    args = []
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line":
            args.append(f"--config-dir={source.path}")
    if hydra_cfg.job.config_name and hydra_cfg.job.config_name != "config":
        args.append(f"--config-name={hydra_cfg.job.config_name}")
    return [*args, *hydra_cfg.overrides.task, f"hydra.run.dir={_quoted(str(run_dir))}"]


def _quoted(value: str) -> str:
    """A Hydra override value that stays one string (run directories hold '=' and ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def launch_local(cfg: Any, hydra_cfg: Any, run_dir: Path) -> int:
    """Start ``hardware.num_processes`` workers on this machine through torch.distributed.run; their exit code."""
    n = int(cfg.hardware.num_processes)
    if int(cfg.hardware.num_nodes) > 1:
        raise PrefrunError(
            f"hardware.num_nodes={cfg.hardware.num_nodes} needs every node started: run under SLURM "
            "(hydra/launcher=slurm) or start `torchrun --nnodes ... -m prefrun ...` on each node"
        )
    prepare(cfg, run_dir)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        f"--signals_to_handle={','.join(('SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', *PREEMPT_SIGNALS[1:]))}",
        f"--shutdown_timeout={int(cfg.hardware.get('shutdown_timeout_s', 120))}",
        "-m",
        "prefrun",
        *_hydra_command(hydra_cfg, run_dir),
    ]
    env = {**os.environ, WORKER_ENV: "1"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    log.info("launching %d processes: %s", n, " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env)
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    names = ("SIGTERM", "SIGINT", *PREEMPT_SIGNALS[1:])
    previous = {name: signal.signal(getattr(signal, name), forward) for name in names}
    try:
        code = proc.wait()
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
    if received:
        print(
            f"prefrun: stopped by {signal.Signals(received[0]).name}; rerun the same command to resume "
            "from the last checkpoint",
            file=sys.stderr,
        )
        return PREEMPT_EXIT_CODE
    if code:
        print(f"prefrun: error: a worker process failed (exit {code}); its error is above", file=sys.stderr)
    return code


def _prepared_marker(run_dir: Path) -> Path:
    env = os.environ
    if "SLURM_JOB_ID" in env:
        token = f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', '0')}-{env.get('SLURM_RESTART_COUNT', '0')}"
    else:
        token = f"run-{env.get('TORCHELASTIC_RUN_ID', 'none')}-{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return run_dir / f".prepared-{token}"


def prepare_ranked(cfg: Any, run_dir: Path, poll_s: float = 0.5) -> None:
    """Ranks started externally: rank 0 prepares in a single-process environment, the others wait for it."""
    marker = _prepared_marker(run_dir)
    if is_main_process():
        try:
            with _single_process_env():
                prepare(cfg, run_dir)
        except PrefrunError as e:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"error: {e}")
            raise
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("ok")
        return
    started = time.time()
    while True:  # a marker from an earlier attempt is older than this process (launch skew is seconds)
        if marker.exists() and marker.stat().st_mtime >= started - 60:
            text = marker.read_text()
            if text.startswith("error: "):
                raise PrefrunError(f"rank 0 failed to prepare the run: {text[7:]}")
            if text == "ok":
                return
        time.sleep(poll_s)


def _destroy_process_group() -> None:
    with contextlib.suppress(Exception):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def with_launcher(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap the Hydra task: launch workers, map srun ranks, or run in this process (returning its value)."""

    @functools.wraps(task)
    def wrapped(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        try:
            if os.environ.get(WORKER_ENV) == "1" or _external_ranks():
                if _slurm_ranks():
                    set_env_from_slurm()
                if int(os.environ.get("WORLD_SIZE", "1")) != world_size(cfg):
                    raise PrefrunError(
                        f"{os.environ.get('WORLD_SIZE')} processes were started but the hardware group asks for "
                        f"{world_size(cfg)} (hardware.num_processes x hardware.num_nodes); make them agree"
                    )
                batch_layout(cfg)
                if os.environ.get(WORKER_ENV) != "1":
                    prepare_ranked(cfg, run_dir)
                if not is_main_process():  # one summary table, from rank 0; errors still reach stderr
                    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
                try:
                    task(cfg)
                finally:
                    _destroy_process_group()
            elif world_size(cfg) > 1:
                batch_layout(cfg)
                code = launch_local(cfg, hydra_cfg, run_dir)
                if code:
                    sys.exit(code)
            else:
                return task(cfg)
        except PrefrunError as e:
            print(f"prefrun: error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped


# --- checkpoints and resume --------------------------------------------------------------------------
def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint directory, or None (missing or torn trainer_state.json)."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        step = int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if path.name == f"checkpoint-{step}" else None


def last_complete_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The highest-step complete ``checkpoint-N`` under ``checkpoint_dir``; a half-written one is skipped."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    complete = []
    for path in root.glob("checkpoint-*"):
        step = checkpoint_step(path)
        if step is not None and path.is_dir():
            complete.append((step, path))
    return max(complete)[1] if complete else None


def truncate_metrics(path: Path, step: int, stage: str = "train") -> None:
    """Drop the metrics.jsonl lines a resumed run logs again: steps after ``step`` and the end-of-training row."""
    from prefrun.results.files import write_atomic
    from prefrun.results.metrics_log import MetricsFile

    metrics = MetricsFile(path)
    if not path.exists():
        return
    metrics.truncate_after(step)  # also drops a line torn by the kill
    rows = metrics.rows()
    keep = [r for r in rows if not (r.get("stage") == stage and (r.get("kind") == "summary" or "train_runtime" in r))]
    if len(keep) != len(rows):
        write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def reset_run_dir(run_dir: Path, cfg: Any) -> Path | None:
    """Rank 0, before anything is written: make the run directory fit what this run will do.

    A finished run with ``run.overwrite=true`` starts clean. A partial run (no results.json) resumes
    from its last complete checkpoint when ``run.resume`` (metrics.jsonl cut back to that step, torn or
    later checkpoints removed) and starts clean otherwise. Returns the checkpoint it resumes from.
    """
    if not is_main_process() or not run_dir.exists():
        return None
    checkpoints = run_dir / CHECKPOINT_DIR
    finished = (run_dir / "results.json").exists()
    resume_from = None if finished or not cfg.run.resume else last_complete_checkpoint(checkpoints)
    if resume_from is None:
        if finished and not cfg.run.overwrite:
            return None  # check_run_dir refuses this one
        for name in ("results.json", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
        return None
    step = checkpoint_step(resume_from)
    for path in checkpoints.glob("checkpoint-*"):  # other entries (a curriculum stage's folder) stay
        other = checkpoint_step(path)
        if path != resume_from and (other is None or other > step):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    truncate_metrics(run_dir / "metrics.jsonl", step)
    log.warning("resuming %s from %s", run_dir, resume_from.name)
    return resume_from


def resume_checkpoint(cfg: Any, output_dir: str | os.PathLike) -> str | None:
    """What ``trainer.train(resume_from_checkpoint=...)`` gets: the last complete checkpoint when resuming."""
    if not cfg.run.resume:
        return None
    found = last_complete_checkpoint(output_dir)
    return str(found) if found is not None else None


class _Preemption:
    """SIGTERM / SIGUSR1 → save a checkpoint at the end of the current step on every rank, stop training.

    The flag is all-reduced each step, so a signal that reaches one rank stops all of them at the same
    step (no rank is left waiting in a collective). Running statistics of objectives (BCO's reward
    shift) are the trainer's to save with the checkpoint (ListTrainer's RunningRewardMean callback, kept in
    trainer_state.json).
    Made a TrainerCallback by ``preemption_callback`` (transformers is imported only then).
    """

    def __init__(self) -> None:
        self.requested: int | None = None  # the signal received here
        self.preempted = False  # training stopped for it (all ranks agree)
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - signal handler signature
        self.requested = signum

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for name in PREEMPT_SIGNALS:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._handler)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _any_rank_requested(self) -> bool:
        import torch
        import torch.distributed as dist

        flag = 1 if self.requested is not None else 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = "cpu"
            if dist.get_backend() == "nccl":
                device = f"cuda:{torch.cuda.current_device()}"
            t = torch.tensor([flag], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t.item())
        return bool(flag)

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        self.install()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self._any_rank_requested():
            self.preempted = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.uninstall()

    def exit_if_preempted(self) -> None:
        """After ``trainer.train()`` returned: exit with PREEMPT_EXIT_CODE when a signal stopped it."""
        if self.preempted:
            name = signal.Signals(self.requested).name if self.requested else "a signal on another rank"
            print(
                f"prefrun: stopped by {name} at a saved checkpoint; rerun the same command to resume",
                file=sys.stderr,
            )
            sys.exit(PREEMPT_EXIT_CODE)


def preemption_callback() -> Any:
    """A TrainerCallback doing what ``_Preemption`` says."""
    from transformers import TrainerCallback

    cls = type("PreemptionCallback", (_Preemption, TrainerCallback), {})
    return cls()
