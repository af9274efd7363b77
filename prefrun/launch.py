"""Launching the ranks of a run: N local processes, srun's ranks, or this process alone.

``prefrun hardware=ddp hardware.num_processes=N ...`` is one command: the process the user started
composes the config, runs the task's ``prepare`` (what must happen once: checks, data, the tiny model,
the cached SFT reference) and then re-invokes the same Hydra command line in N workers through
``torch.distributed.run`` (``hydra.run.dir`` pinned to the resolved run directory, ``PREFRUN_WORKER=1``
so they do not relaunch). Under SLURM (``srun`` set ``SLURM_PROCID`` and more than one task) the ranks
already exist: their torch.distributed variables come from SLURM's, rank 0 prepares while the others
wait, and nothing is launched. Ranks started by the user's own ``torchrun -m prefrun ...`` are treated
the same way.

Inside the workers, accelerate/transformers' Trainer does the distributed work (gloo on CPU, NCCL on
GPU, FSDP or DeepSpeed when the hardware group says so); ``prefrun.runner`` runs the task on every rank
and only rank 0 writes. Checkpoints and preemption live in ``prefrun.runtime.checkpoints``.
"""

from __future__ import annotations

import contextlib
import functools
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
from prefrun.runtime.checkpoints import PREEMPT_EXIT_CODE, PREEMPT_SIGNALS
from prefrun.runtime.distributed import batch_layout, is_main_process, world_size

log = logging.getLogger("prefrun")

WORKER_ENV = "PREFRUN_WORKER"
WORKER_ERRORS = ".worker-errors"  # in the run directory: each failing worker's one-line error, for the launcher
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
    """What must happen once, in one process, before ranks start: the run's checks and its task's ``prepare``."""
    from prefrun.runner import prepare as prepare_run

    batch_layout(cfg)
    prepare_run(cfg, run_dir)


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
    errors = run_dir / WORKER_ERRORS
    shutil.rmtree(errors, ignore_errors=True)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from prefrun.launch import torchrun_main; torchrun_main(sys.argv[1:])",
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
    messages = list(dict.fromkeys(p.read_text() for p in sorted(errors.glob("rank-*")))) if errors.is_dir() else []
    shutil.rmtree(errors, ignore_errors=True)
    if code and messages:  # the workers' PrefrunErrors: each distinct line once, as a single process says it
        for message in messages:
            print(f"prefrun: error: {message}", file=sys.stderr)
        return 2
    if code:
        print(f"prefrun: error: a worker process failed (exit {code}); its error is above", file=sys.stderr)
    return code


def torchrun_main(argv: list[str]) -> None:
    """``torch.distributed.run`` with ``argv``, exiting with the first failed worker's code.

    Without its own failure report (the ChildFailedError traceback and the agent's log lines): a worker's
    bug prints its own traceback, a worker's PrefrunError reaches the launcher as one line.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        main(argv)
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        sys.exit(code if code > 0 else 128 - code if code < 0 else 1)  # killed by signal N: 128 + N, as a shell says


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


def needs_distributed_engine(cfg: Any) -> bool:
    """FSDP and DeepSpeed need torch.distributed even on one process (transformers refuses them without it)."""
    return bool(cfg.hardware.get("fsdp") or cfg.hardware.get("deepspeed"))


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
                except PrefrunError as e:
                    if os.environ.get(WORKER_ENV) != "1":
                        raise
                    errors = run_dir / WORKER_ERRORS  # the launcher prints it once, not once per rank
                    errors.mkdir(parents=True, exist_ok=True)
                    (errors / f"rank-{os.environ.get('RANK', '0')}").write_text(str(e))
                    sys.exit(2)
                finally:
                    _destroy_process_group()
            elif world_size(cfg) > 1 or needs_distributed_engine(cfg):
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
