"""The resume policy: which run or sweep ``resume=...`` continues, and what may differ from it.

Plain functions of paths, override lists and configs (no Hydra), so that every rule is testable on
its own (tests/engine/test_resume.py); ``rsdet.train_cli`` applies them to a Hydra job. The rules are
those of docs/resume.md:

- ``resume=true`` continues the newest unfinished run under ``outputs/`` started with the same
  overrides, ``resume=PATH`` the run directory PATH;
- ``-m ... resume=true`` continues the newest sweep under ``outputs/multirun`` started with the same
  overrides (``resume=DIR`` names it), where each job folder is reused, resumed or started;
- overrides that do not change results (``RESUME_NEUTRAL``) may differ, and a resumed run keeps its
  own config.yaml apart from the device, the workers, the logger and the number of processes;
- ``claim``: before anything in the run folder is written, its checkpoint is read and checked and
  the folder's lock is taken (one writer per run, ``rsdet.engine.locks``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from rsdet.errors import RsdetError

log = logging.getLogger("rsdet.train")

#: override keys that may differ between a run and the command that resumes it
RESUME_NEUTRAL = ("resume", "device", "logger", "logger.mode", "num_workers", "distributed", "distributed.nproc",
                  "distributed.backend", "distributed.timeout_s", "legacy_checkpoint")


def checkpoint_of(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def key_overrides(overrides: list[str]) -> list[str]:
    """The overrides that identify a run: sorted, without the resume-neutral ones."""
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in RESUME_NEUTRAL)


def is_resume(value) -> bool:
    """``resume=`` asks to continue something (true or a path), not false/none/null."""
    return value not in (False, None) and str(value).lower() not in ("false", "none", "null")


def find_resumable(resume, overrides: list[str], outputs: Path) -> Path | None:
    """The run directory to continue: an explicit path, or (``resume=true``) the newest unfinished run
    under ``outputs/`` started with the same overrides."""
    from rsdet.records import find_runs

    if isinstance(resume, str) and resume.lower() not in ("true", "false"):
        path = Path(resume).expanduser()
        if not checkpoint_of(path).is_file():
            raise RsdetError(f"resume={resume}: {checkpoint_of(path)} does not exist; give a run "
                             "directory that has a checkpoint")
        return path
    wanted = key_overrides(overrides)
    if not outputs.is_dir():
        return None
    candidates = []
    for run in find_runs(outputs):
        info = run.info or {}
        if info.get("status") == "completed" or not checkpoint_of(run.dir).is_file():
            continue
        if key_overrides(info.get("overrides", [])) == wanted:
            candidates.append(run.dir)
    return max(candidates, key=lambda p: checkpoint_of(p).stat().st_mtime) if candidates else None


def find_sweep(overrides: list[str], outputs: Path) -> Path | None:
    """The newest sweep directory under ``outputs/multirun`` whose sweep was started with the same
    overrides as ``overrides`` (those of ``RESUME_NEUTRAL`` aside), or None."""
    import yaml

    wanted = key_overrides(overrides)
    found = []
    for manifest in (outputs / "multirun").glob("*/*/multirun.yaml"):
        try:
            task = ((yaml.safe_load(manifest.read_text()) or {}).get("hydra") or {}).get("overrides", {}).get("task")
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            log.warning("skipping %s while looking for the sweep to resume (%s)", manifest, exc)
            continue
        if isinstance(task, list) and key_overrides([str(t) for t in task]) == wanted:
            found.append(manifest.parent)
    # <date>/<time>_<random suffix>: newest by date and time; the suffix says nothing about order
    return max(found, key=lambda d: (d.parent.name, d.name.split("_", 1)[0], d.stat().st_mtime)) if found else None


def sweep_job_action(run_dir: Path, overrides: list[str]) -> tuple[str, Path | None]:
    """What to do with a resumed sweep's job folder: ("reuse" | "resume" | "start", checkpoint).

    Reuse a completed job with metrics, resume one with a checkpoint, start one without; a folder
    holding a run of other overrides is an error (the sweep's jobs are numbered differently)."""
    from rsdet.records import RUN_FILE, RunRecord

    if not (run_dir / RUN_FILE).is_file():
        return "start", None
    record = RunRecord(run_dir, create=False)
    if key_overrides(record.info.get("overrides", [])) != key_overrides(overrides):
        raise RsdetError(f"{run_dir} holds a run with overrides {record.info.get('overrides')}, not this job's "
                         f"{overrides}; the sweep's jobs are numbered differently. Resume it with the same "
                         "sweep overrides in the same order, or start a new sweep without resume=...")
    if record.status == "completed" and record.metrics:
        return "reuse", None
    checkpoint = checkpoint_of(run_dir)
    return ("resume", checkpoint) if checkpoint.is_file() else ("start", None)


def resumed_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The run's own config.yaml with this command's device and resume, and its num_workers,
    distributed block (how many processes continue it) and logger where this command sets them
    (they do not change results; the run's own ``logger.log_every`` stays, as it sets which
    iterations get a history row)."""
    from rsdet.records import load_run_config

    old = load_run_config(run_dir)
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    with open_dict(old):
        old.device = cfg.device
        old.resume = cfg.resume
        old.legacy_checkpoint = bool(cfg.get("legacy_checkpoint", False))
        if "num_workers" in given:
            old.num_workers = cfg.num_workers
        if any(k == "distributed" or k.startswith("distributed.") for k in given) and cfg.get("distributed"):
            old.distributed = OmegaConf.to_container(cfg.distributed, resolve=True)
        if any(k == "logger" or k.startswith("logger.") for k in given):
            log_every = (old.get("logger") or {}).get("log_every")
            old.logger = OmegaConf.to_container(cfg.logger, resolve=True)
            if log_every is not None:
                old.logger.log_every = log_every
    return old


def _identity(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def claim(run_dir: Path, checkpoint: Path | None = None, *, allow_legacy: bool = False, what: str = "run"):
    """Take ``run_dir`` for this process: ``(lock, checkpoint state or None)``.

    The checkpoint is read and checked first (``load_checkpoint``: nothing runs, nothing is written),
    then the directory's lock is taken (``LockHeld`` names the live process that has it), then the
    checkpoint is read again if its writer replaced it in between. Only after this may the caller
    touch the run's files."""
    from rsdet.engine.checkpoint import load_checkpoint
    from rsdet.engine.locks import DirLock

    state = seen = None
    if checkpoint is not None:
        seen = _identity(checkpoint) if checkpoint.is_file() else None
        state = load_checkpoint(checkpoint, allow_legacy=allow_legacy)
    lock = DirLock(run_dir, what).acquire()
    try:
        if checkpoint is not None and (_identity(checkpoint) if checkpoint.is_file() else None) != seen:
            state = load_checkpoint(checkpoint, allow_legacy=allow_legacy)  # replaced just before its writer ended
    except BaseException:
        lock.release()
        raise
    return lock, state
