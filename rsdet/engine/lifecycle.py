"""The run lifecycle: a record is started ``running`` and closed ``completed``, ``failed`` or
``interrupted`` (docs/records.md, "Statuses") — the same way for a single process, for the launcher
of ``distributed.nproc=N`` and for the ranks of an external launcher (torchrun, SLURM tasks).

``run_recorded`` is the one place that maps how the training body ended to a status:

- it returned: ``completed`` (rank 0 alone writes);
- ``KeyboardInterrupt`` (Ctrl-C, SIGTERM, a scheduler's SIGUSR2): ``interrupted``, with the resume
  command, or requeued through submitit's handler;
- any other exception: ``failed`` with the error and traceback. In a run of several ranks under an
  external launcher every rank leaves its error report and marks the record itself (rank 0 may be
  killed by the launcher before it can), naming the rank that failed first for a reason of its own.

``OUTCOMES`` collects one entry per job for the summary line of ``rsdet train``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from rsdet.errors import RsdetError

log = logging.getLogger("rsdet.train")

#: {"run_dir", "status": completed | failed | reused, "error"?} per job of this command
OUTCOMES: list[dict] = []


def start_record(cfg, ctx: dict, run_dir: Path, resume_from: Path | None):
    """Write config.yaml and mark run.json ``running`` (a resumed run keeps its choices/overrides)."""
    from rsdet.engine.distributed import clear_errors
    from rsdet.records import RunRecord

    record = RunRecord(run_dir)
    record.write_config(cfg)
    clear_errors(run_dir)
    if resume_from is not None:  # keep the original choices/overrides; start() notes the resume time
        info = record.info
        record.start(info.get("choices"), info.get("overrides"), multirun=info.get("multirun"))
    else:  # iteration 0: a sweep job started again in its folder had a stale one
        record.start(ctx["choices"], ctx["overrides"], multirun=ctx["multirun"], iteration=0)
    return record


def _finish(record, status: str, **fields) -> None:
    """Close the record; a disk that no longer takes run.json is reported, not raised over the run's own error."""
    try:
        record.reload()
        record.finish(status, **fields)
    except OSError as err:
        log.error("could not mark %s %s (%s)", record.dir / "run.json", status, err)


def mark_interrupted(record, exc: KeyboardInterrupt, run_dir: Path) -> None:
    requeue = getattr(exc, "requeue", None)
    if requeue is not None:
        _finish(record, "interrupted", error="stopped by the job scheduler (preemption or time limit) with a "
                                             "checkpoint; the job is requeued and resumes from it")
        log.warning("preempted: checkpoint kept in %s; requeueing the job", record.checkpoint_dir)
        requeue(exc.signum, None)  # submitit: requeue and exit (rank 0); returns on the other ranks
        return
    _finish(record, "interrupted", error="interrupted by the user (Ctrl-C) or a signal; continue with resume=true")
    log.warning("interrupted; checkpoint kept in %s — continue with: rsdet train resume=%s", record.checkpoint_dir,
                run_dir)


def mark_failed(record, exc: Exception, run_dir: Path, extra_errors: list[dict] | None = None) -> None:
    """Mark the record failed; in a data-parallel run name the rank that failed first for a reason of its own."""
    from rsdet.engine.distributed import root_cause

    error, tb = f"{type(exc).__name__}: {exc}", getattr(exc, "worker_traceback", None) or traceback.format_exc()
    cause = root_cause(extra_errors or [])
    if cause is not None and cause.get("error") != error:
        error, tb = f"rank {cause['rank']} failed: {cause['error']}", cause.get("traceback") or tb
    if isinstance(exc, OSError) and not isinstance(exc, RsdetError):  # disk full, file-size limit, permissions
        error = (f"could not write to the run folder {run_dir}: {exc.strerror or exc}"
                 f"{f' ({exc.filename})' if getattr(exc, 'filename', None) else ''}; free space or fix the folder, "
                 "then continue with resume=true")
    _finish(record, "failed", error=error, traceback=tb)  # the disk that broke the run may not take run.json
    if isinstance(exc, (RsdetError, OSError)):
        log.error("run failed: %s", error)
    else:
        log.exception("run failed")
    OUTCOMES.append({"run_dir": str(run_dir), "status": "failed", "error": error})


def run_recorded(record, run_dir: Path, body: Callable[[], dict], *, rank: int | None = None,
                 on_completed: Callable[[dict, Path], None] | None = None) -> dict:
    """Run ``body`` (the training) and close ``record`` by how it ended; return its metrics ({} on failure).

    ``rank``: None for a process that owns the record alone (one process, or the launcher of
    ``distributed.nproc``); the rank under an external launcher, where every rank calls this.
    KeyboardInterrupt is re-raised after the record is closed (Hydra and the shell see the stop);
    other exceptions are recorded and swallowed, so that a sweep goes on with its next job."""
    from rsdet.engine import distributed

    main = rank is None or rank == 0
    try:
        metrics = body()
    except KeyboardInterrupt as exc:
        if main:
            mark_interrupted(record, exc, run_dir)
        elif getattr(exc, "requeue", None) is not None:
            exc.requeue(exc.signum, None)
        raise
    except Exception as exc:  # the record must say why; multirun goes on with the next job
        reports = None
        if rank is not None:
            distributed.write_error(run_dir, rank, exc)
            if main:
                time.sleep(1.0)  # let a peer whose failure broke this rank's collective leave its report
            reports = distributed.read_errors(run_dir)
        mark_failed(record, exc, run_dir, reports)
        return {}
    if main:
        record.reload()
        record.finish("completed")
        OUTCOMES.append({"run_dir": str(run_dir), "status": "completed"})
        if on_completed is not None:
            on_completed(metrics, run_dir)
    return metrics
