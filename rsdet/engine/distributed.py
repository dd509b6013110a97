"""Data-parallel training with ``torch.distributed``: who am I, how do the processes talk, how do they agree.

A run has ``world_size`` processes (ranks), one per GPU (or several on the CPU with gloo). Every
rank builds the same model, reads its own part of every global batch (``rsdet.engine.loader``),
ranks its own images (the paper's per-GPU ranking list) and DistributedDataParallel averages the
gradients. Rank 0 alone writes the run record, the history, W&B and the checkpoints
(docs/distributed.md).

Three ways to get there:

- ``rsdet train distributed.nproc=N``: the command starts the N processes itself
  (``rsdet.engine.launch``);
- an external launcher (``torchrun --nproc_per_node=N -m rsdet train ...``, or SLURM tasks through
  ``hydra/launcher=slurm``): every process runs ``rsdet train``; ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
  (torchrun) or the SLURM task variables say which one it is;
- one process (``world_size`` 1): nothing here does anything, and the training step is the
  single-device one bit for bit.

Collectives of the engine's own bookkeeping (the stop flag at every iteration, the history sums at
logging steps, the RNG states at checkpoints, the detections of a sharded evaluation) go through a
gloo group on the CPU (``control``), so they never synchronise the GPU; gradients go through the
main backend (NCCL on CUDA). Every collective has the configured timeout (``distributed.timeout_s``),
so a rank that stops answering ends the run with an error instead of a hang.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rsdet.errors import ConfigError

log = logging.getLogger(__name__)

#: Folder inside a run directory where the ranks of a distributed run leave their error reports.
DIST_DIR = ".dist"


@dataclass
class DistContext:
    """The calling process' place in the run. ``DistContext()`` is the single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    launcher: str = "none"  # none | spawn | external
    control: Any = field(default=None, repr=False)  # the gloo group of the engine's bookkeeping

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, spec: str | None) -> torch.device:
        """The device of this rank: ``cuda:<local_rank>`` when CUDA is used, else the CPU."""
        from rsdet.engine.inference import pick_device

        device = pick_device(spec)
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    # ------------------------------------------------------------------ collectives (no-ops on one process)
    def max(self, value: int) -> int:
        """The largest ``value`` of all ranks, on every rank (a CPU collective: no GPU synchronisation)."""
        if not self.enabled:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=self.control)
        return int(t.item())

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj, group=self.control)
        return out

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (a list in rank order), None elsewhere."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        torch.distributed.gather_object(obj, out, dst=0, group=self.control)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics), e.g. before evaluating."""
        if not self.enabled:
            return
        for buf in module.buffers():
            torch.distributed.broadcast(buf, src=0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier(group=self.control)


SINGLE = DistContext()


def resolve_nproc(value: Any) -> int:
    """``distributed.nproc``: a positive number, or ``auto`` = every visible GPU (1 without CUDA)."""
    if value in (None, "auto"):
        return max(torch.cuda.device_count(), 1) if torch.cuda.is_available() else 1
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f"distributed.nproc={value!r} must be a positive number of processes or auto "
                          "(= every visible GPU, 1 on a CPU-only machine)")
    return n


def resolve_backend(backend: str | None, device_spec: str | None) -> str:
    """``distributed.backend``: ``auto`` = NCCL when training on CUDA, gloo on the CPU."""
    backend = (backend or "auto").lower()
    cuda = torch.cuda.is_available() and str(device_spec or "auto") != "cpu"
    if backend == "auto":
        return "nccl" if cuda else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ConfigError(f"distributed.backend={backend!r} is not one of auto, nccl, gloo")
    if backend == "nccl" and not cuda:
        raise ConfigError("distributed.backend=nccl needs CUDA; use distributed.backend=gloo (or auto) on the CPU")
    return backend


def external_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when an external launcher started this process as one of
    several: torchrun's variables, or a SLURM task of a job with several tasks (submitit)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env and int(env["WORLD_SIZE"]) > 1:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SUBMITIT_FOLDER" in env and int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return None


def _export_slurm_rendezvous() -> None:
    """MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK for a submitit SLURM task (submitit knows the
    first node of the allocation)."""
    if "MASTER_ADDR" in os.environ and "RANK" in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def free_port() -> int:
    """A port that was free a moment ago (another process may take it before it is used again; the
    launcher of ``distributed.nproc`` binds its rendezvous store to port 0 instead, see ``serve_store``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_store(timeout_s: float = 600.0):
    """A rendezvous store on a port the kernel picks and this process keeps bound (no window in which
    another run could take it: two runs started together never meet on one port). Returns
    ``(store, port)``; the workers join with ``join_store(port)``."""
    store = torch.distributed.TCPStore("127.0.0.1", 0, None, True, _dt.timedelta(seconds=float(timeout_s)),
                                       wait_for_workers=False)
    return store, int(store.port)


def join_store(port: int, timeout_s: float = 600.0):
    return torch.distributed.TCPStore("127.0.0.1", int(port), None, False, _dt.timedelta(seconds=float(timeout_s)))


def init(dist_cfg: Any, device_spec: str | None, *, rank: int, world_size: int, local_rank: int,
         launcher: str, init_method: str | None = None, store_port: int | None = None) -> DistContext:
    """Join the process group (through the launcher's store on ``store_port``, or ``init_method``,
    default ``env://``) and make the control group."""
    import torch.distributed as tdist

    backend = resolve_backend((dist_cfg or {}).get("backend"), device_spec)
    timeout = _dt.timedelta(seconds=float((dist_cfg or {}).get("timeout_s") or 600))
    if launcher == "external" and "SUBMITIT_FOLDER" in os.environ:
        _export_slurm_rendezvous()
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        # a rank whose peer died aborts its NCCL collectives after the timeout instead of hanging
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if store_port is not None:
        tdist.init_process_group(backend=backend, store=join_store(store_port, timeout.total_seconds()), rank=rank,
                                 world_size=world_size, timeout=timeout)
    else:
        tdist.init_process_group(backend=backend, init_method=init_method or "env://", rank=rank,
                                 world_size=world_size, timeout=timeout)
    control = tdist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    ctx = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend,
                      launcher=launcher, control=control)
    log.info("rank %d of %d (%s, local rank %d)", rank, world_size, backend, local_rank)
    return ctx


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except Exception as exc:  # a broken group (a dead peer): nothing left to tidy
            log.debug("destroy_process_group: %s", exc)


# ---------------------------------------------------------------------------------------- error reports
def error_file(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / DIST_DIR / f"rank{rank}.error.json"


def write_error(run_dir: Path, rank: int, exc: BaseException) -> None:
    """Leave this rank's error where rank 0, the launching command and ``rsdet report`` find it."""
    path = error_file(run_dir, rank)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rank": rank, "pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}",
                                    "traceback": "".join(traceback.format_exception(type(exc), exc,
                                                                                    exc.__traceback__))}))
    except OSError as err:
        log.error("rank %d could not write its error report %s (%s)", rank, path, err)


def read_errors(run_dir: Path) -> list[dict]:
    """The error reports of a run's ranks, oldest first."""
    folder = Path(run_dir) / DIST_DIR
    found = []
    for path in sorted(folder.glob("rank*.error.json")) if folder.is_dir() else []:
        try:
            found.append((path.stat().st_mtime, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return [e for _, e in sorted(found, key=lambda x: x[0])]


def clear_errors(run_dir: Path) -> None:
    folder = Path(run_dir) / DIST_DIR
    for path in folder.glob("rank*.error.json") if folder.is_dir() else []:
        path.unlink(missing_ok=True)


_PEER_SYMPTOMS = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "peer",
                  "nccl", "gloo", "socket")


def root_cause(errors: list[dict]) -> dict | None:
    """The report of the rank that failed first for a reason of its own: a rank whose collective
    broke because a peer died reports a connection error, which names nothing useful."""
    if not errors:
        return None
    own = [e for e in errors if not any(s in (e.get("error") or "").lower() for s in _PEER_SYMPTOMS)]
    return (own or errors)[0]
