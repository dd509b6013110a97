"""``rsdet train distributed.nproc=N``: the command starts N training processes itself and supervises them.

The launching process keeps the run record (it marked it running; it marks it completed, failed or
interrupted); its N workers (``torch.multiprocessing`` spawn, one per GPU or N on the CPU) join a
process group over TCP on this host (through a rendezvous store the launcher keeps on a port the
kernel picked, so concurrent runs never share one) and run ``rsdet.engine.trainer.train`` as ranks 0..N-1, rank 0
writing history, checkpoints and metrics.

Supervision: the workers run in their own sessions, so a signal reaches each of them exactly once,
forwarded by the launcher (Ctrl-C, SIGTERM, submitit's SIGUSR2): they stop together at the next
iteration boundary with a checkpoint. When a worker fails (an exception, or killed), the others
notice at their next collective (gloo: at once; NCCL: at ``distributed.timeout_s``) or are killed
after ``GRACE_S``, and the record says which rank failed and why (its error report in
``run_dir/.dist/``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from rsdet.engine import distributed
from rsdet.errors import TrainingError

log = logging.getLogger(__name__)

#: exit status of a worker that stopped on a signal with a checkpoint written (EX_TEMPFAIL)
EXIT_STOPPED = 75
#: seconds the surviving workers get to end on their own after one failed, before they are killed
GRACE_S = 5.0
_FORWARDED = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ())


class WorkerFailed(TrainingError):
    """A rank of a data-parallel run failed; ``worker_traceback`` is its traceback when it had one."""

    def __init__(self, message: str, worker_traceback: str | None = None):
        super().__init__(message)
        self.worker_traceback = worker_traceback


def _setup_worker_logging(run_dir: Path, rank: int) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter(f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] %(message)s")
    file = logging.FileHandler(run_dir / "train.log")
    file.setFormatter(fmt)
    file.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.addHandler(file)
    if rank == 0:
        from rich.logging import RichHandler

        root.addHandler(RichHandler(show_path=False, markup=False))
    else:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        console.setLevel(logging.WARNING)
        root.addHandler(console)
    root.setLevel(logging.INFO)


def _worker(rank: int, world_size: int, store_port: int, cfg_data: dict, run_dir: str,
            resume_from: str | None) -> None:
    """One rank: join the group, train, leave an error report on failure; the exit status says how it ended."""
    os.setsid()  # signals come from the launcher only (once each), not from the terminal's process group
    from omegaconf import OmegaConf

    from rsdet.engine.trainer import train
    from rsdet.records import RunRecord

    run = Path(run_dir)
    _setup_worker_logging(run, rank)
    cfg = OmegaConf.create(cfg_data)
    ctx = distributed.SINGLE
    code = 0
    try:
        ctx = distributed.init(cfg.get("distributed"), cfg.device, rank=rank, world_size=world_size,
                               local_rank=rank, launcher="spawn", store_port=store_port)
        train(cfg, RunRecord(run), resume_from=Path(resume_from) if resume_from else None, dist=ctx)
    except KeyboardInterrupt:
        code = EXIT_STOPPED
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the launcher
        distributed.write_error(run, rank, exc)
        logging.getLogger("rsdet.train").error("rank %d failed: %s: %s", rank, type(exc).__name__, exc)
        code = 1
    finally:
        distributed.shutdown(ctx)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _describe_exit(rank: int, pid: int, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"rank {rank} (pid {pid}) was killed by {name}"
    return f"rank {rank} (pid {pid}) exited with status {code}"


def spawn(cfg: Any, record, resume_from: Path | None, nproc: int) -> dict:
    """Run ``cfg`` as ``nproc`` processes on this host; return rank 0's metrics.

    Raises ``WorkerFailed`` naming the first rank that failed, or ``Stopped`` when the run stopped on a
    signal (its ``requeue`` is the handler submitit had installed for SIGUSR2, if that was the signal)."""
    import torch.multiprocessing as mp
    from omegaconf import OmegaConf

    from rsdet.engine.signals import Stopped

    distributed.clear_errors(record.dir)
    ctx = mp.get_context("spawn")
    # the rendezvous store lives here, on a port bound until the workers are done (docs/distributed.md)
    store, port = distributed.serve_store(float((cfg.get("distributed") or {}).get("timeout_s") or 600))
    data = OmegaConf.to_container(cfg, resolve=True)
    procs = [ctx.Process(target=_worker, name=f"rsdet-rank{r}",
                         args=(r, nproc, port, data, str(record.dir), str(resume_from) if resume_from else None))
             for r in range(nproc)]
    received: list[int] = []
    previous = {}

    def forward(signum, frame):
        received.append(signum)
        log.warning("signal %d: passing it on to the %d training processes", signum, nproc)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                try:
                    os.kill(p.pid, signum)
                except ProcessLookupError:
                    pass

    for sig in _FORWARDED:
        try:
            previous[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread
            pass
    try:
        for p in procs:
            p.start()
        record.update(world_size=nproc, worker_pids=[p.pid for p in procs])
        log.info("started %d training processes: %s", nproc, ", ".join(str(p.pid) for p in procs))
        failed: list[tuple[int, int]] = []  # (rank, exit status) in the order seen
        killed_here: set[int] = set()      # ranks this launcher killed after another one failed
        deadline = None
        while any(p.exitcode is None for p in procs):
            wait([p.sentinel for p in procs if p.exitcode is None], timeout=0.5)
            for r, p in enumerate(procs):
                if p.exitcode not in (None, 0, EXIT_STOPPED) and all(r != f for f, _ in failed):
                    failed.append((r, p.exitcode))
            if failed and deadline is None:
                deadline = time.monotonic() + GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                for p in procs:
                    if p.exitcode is None:
                        log.warning("killing %s (pid %d): rank %d failed", p.name, p.pid, failed[0][0])
                        killed_here.add(procs.index(p))
                        p.kill()
                deadline = float("inf")
        for p in procs:
            p.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        del store
    record.reload()
    if failed:
        # a rank killed by a signal from outside is the cause even when a peer's collective error was
        # seen in the same poll (the peers fail *because* it died)
        outside = [(r, c) for r, c in failed if c < 0 and r not in killed_here]
        rank, code = outside[0] if outside else failed[0]
        pid = procs[rank].pid
        reports = {e.get("rank"): e for e in distributed.read_errors(record.dir)}
        own = reports.get(rank)
        if own is not None:
            cause = distributed.root_cause([own, *[e for r, e in reports.items() if r != rank]])
            message = f"rank {cause['rank']} of {nproc} failed: {cause['error']}"
            raise WorkerFailed(message, cause.get("traceback"))
        others = "; ".join(f"rank {r}: {e['error']}" for r, e in sorted(reports.items()))
        raise WorkerFailed(_describe_exit(rank, pid, code) + (f" (then {others})" if others else ""))
    if any(p.exitcode == EXIT_STOPPED for p in procs):
        signum = received[0] if received else signal.SIGTERM
        usr2 = getattr(signal, "SIGUSR2", None)
        handler = previous.get(signum) if signum == usr2 else None
        raise Stopped(signum, handler if callable(handler) else None)
    return record.metrics or {}
