"""``rsdet train``: Hydra composes ``conf/train.yaml``; each (multirun) job writes one run record.

A failing multirun job does not stop the sweep: its record says ``failed`` with the error, the
remaining jobs run, and the command exits 1 at the end with a summary.

``resume=true`` continues a single run from its checkpoint (``find_resumable``). With ``-m`` it
resumes a whole sweep: the newest sweep directory under ``outputs/multirun`` started with the same
overrides becomes this sweep's directory again (``hydra.sweep.dir`` is set before Hydra starts), so
every job lands in its old ``job<N>`` folder, where a completed job is reused as it is, an
unfinished one continues from its checkpoint, and a missing one starts (README, "Resume").
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rsdet.engine.lifecycle import OUTCOMES, run_recorded, start_record
from rsdet.engine.locks import DirLock
from rsdet.engine.names import register_resolvers
from rsdet.engine.resume import (RESUME_NEUTRAL, checkpoint_of, claim, find_resumable, find_sweep,  # noqa: F401
                                 is_resume, key_overrides, resumed_config, sweep_job_action)
from rsdet.errors import RsdetError
from rsdet.paths import conf_dir

log = logging.getLogger("rsdet.train")
CONF_DIR = str(conf_dir())  # conf/ of the checkout, or rsdet/conf of an installed wheel
register_resolvers()  # ${rsdet.name:...}, ${rsdet.unique:} of the run directory names (conf/train.yaml)
# Hydra-internal keys never shown as a run's "choices".
_HIDDEN_GROUPS = ("hydra/",)
# names older callers (and tests) use
_resumed_config, _key_overrides, _RESUME_NEUTRAL = resumed_config, key_overrides, RESUME_NEUTRAL


def _job_context() -> dict:
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith(_HIDDEN_GROUPS) and k != "hydra"}
    overrides = list(hc.overrides.task)
    multirun = None
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir)  # outputs/multirun/<date>/<time>: "<date>/<time>" names the W&B group
        multirun = {"sweep_dir": hc.sweep.dir, "sweep_name": f"{sweep.parent.name}/{sweep.name}", "job_num": hc.job.num}
    return {"run_dir": Path(hc.runtime.output_dir), "choices": choices, "overrides": overrides, "multirun": multirun}


def _argv_overrides(argv: list[str]) -> list[str]:
    """The config overrides of a command line (no flags, no ``hydra.*`` settings)."""
    return [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra.")]


def _resume_sweep_argv(argv: list[str]) -> list[str]:
    """``-m ... resume=true``: point Hydra at the sweep directory to resume (``resume=DIR`` names it)."""
    if not ({"-m", "--multirun"} & set(argv)):
        return argv
    resume = next((a.split("=", 1)[1] for a in reversed(_argv_overrides(argv)) if a.split("=", 1)[0] == "resume"), None)
    if resume is None or not is_resume(resume) or any(a.startswith("hydra.sweep.dir=") for a in argv):
        return argv
    if resume.lower() != "true":
        sweep = Path(resume).expanduser()
        if not (sweep / "multirun.yaml").is_file():
            raise RsdetError(f"resume={resume}: {sweep} is not a sweep directory (no multirun.yaml); give "
                             "outputs/multirun/<date>/<time> or use resume=true to find it by its overrides")
    else:
        outputs = Path(os.getcwd()) / "outputs"
        sweep = find_sweep(_argv_overrides(argv), outputs)
        if sweep is None:
            log.warning("resume=true: no sweep under %s was started with these overrides; starting a new sweep",
                        outputs / "multirun")
            return argv
    print(f"resuming the sweep in {sweep}")
    return [*argv, f"hydra.sweep.dir='{sweep.resolve()}'"]


def _print_metrics(metrics: dict, run_dir: Path) -> None:
    from rich.console import Console

    from rsdet.evaluation.evaluator import SUMMARY_KEYS
    from rsdet.evaluation.sweep import metrics_table

    bbox = metrics.get("bbox") or {}
    console = Console()
    console.print(metrics_table(bbox, [k for k in SUMMARY_KEYS if k in bbox], title=f"box metrics — {run_dir}",
                                horizontal=True))
    segm = metrics.get("segm") or {}
    if segm:
        console.print(metrics_table(segm, [k for k in SUMMARY_KEYS if k in segm], title=f"mask metrics — {run_dir}",
                                    horizontal=True))
    console.print(f"train {metrics.get('train_seconds', 0):.0f}s, eval {metrics.get('eval_seconds', 0):.0f}s, "
                  f"{metrics.get('iterations', 0)} iterations")


def _in_submitit() -> bool:
    """A job of ``hydra/launcher=slurm|local`` (submitit): a requeued job resumes from its checkpoint."""
    return "SUBMITIT_FOLDER" in os.environ or "SUBMITIT_EXECUTOR" in os.environ


@dataclass
class _Job:
    """What one job does: "train" (``resume_from``/``state``: the checkpoint it continues, read and
    checked), "reuse" (a completed sweep job) or "skip" (it cannot run; the reason is logged and
    counted). ``lock``: the run directory's lock, held until the job ends."""

    action: str
    cfg: DictConfig
    run_dir: Path
    resume_from: Path | None = None
    state: dict | None = None
    lock: DirLock | None = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _prepare(cfg: DictConfig, ctx: dict) -> _Job:
    """Decide what this job does and claim its run directory (``resume.claim``: the checkpoint is read
    and checked and the lock taken before anything in the folder is written). A job that cannot run
    (another live process holds the run, a refused checkpoint, a sweep folder of another sweep) is
    skipped with its reason logged and counted as failed; the folder it names is left untouched."""
    target = ctx["run_dir"]
    allow_legacy = bool(cfg.get("legacy_checkpoint"))
    try:
        auto = ctx["multirun"] and _in_submitit() and (target / "run.json").is_file()  # a requeued job
        if (is_resume(cfg.resume) or auto) and ctx["multirun"]:  # the sweep directory is the resumed one (main)
            action, checkpoint = sweep_job_action(target, ctx["overrides"])
            if action == "reuse":
                log.info("job %s completed earlier; reusing %s", ctx["multirun"]["job_num"], target)
                OUTCOMES.append({"run_dir": str(target), "status": "reused"})
                return _Job("reuse", cfg, target)
            lock, state = claim(target, checkpoint, allow_legacy=allow_legacy)
            if action == "resume":
                log.info("resuming job %s in %s", ctx["multirun"]["job_num"], target)
                return _Job("train", resumed_config(target, cfg, ctx["overrides"]), target, checkpoint, state, lock)
            return _Job("train", cfg, target, lock=lock)
        if is_resume(cfg.resume):
            outputs = Path(os.getcwd()) / "outputs"
            previous = find_resumable(cfg.resume, ctx["overrides"], outputs)
            if previous is None:
                log.warning("resume=%s: no unfinished run with the same overrides under %s; starting fresh",
                            cfg.resume, outputs)
            else:
                target, checkpoint = previous, checkpoint_of(previous)
                lock, state = claim(previous, checkpoint, allow_legacy=allow_legacy)
                try:
                    resumed = resumed_config(previous, cfg, ctx["overrides"])
                except BaseException:
                    lock.release()
                    raise
                log.info("resuming the run in %s", previous)
                return _Job("train", resumed, previous, checkpoint, state, lock)
        lock, _ = claim(target)
        return _Job("train", cfg, target, lock=lock)
    except RsdetError as exc:
        log.error("%s", exc)
        OUTCOMES.append({"run_dir": str(target), "status": "failed", "error": str(exc)})
        return _Job("skip", cfg, target)


def run_job(cfg: DictConfig) -> dict:
    """Train + evaluate one composed config into its Hydra output directory (or the resumed one)."""
    from rsdet.engine import distributed

    ctx = _job_context()
    env = distributed.external_env()
    if env is not None:
        return _run_job_ranked(cfg, ctx, env)
    job = _prepare(cfg, ctx)
    try:
        if job.action == "skip":
            return {}
        if job.action == "reuse":
            from rsdet.records import RunRecord

            return RunRecord(job.run_dir, create=False).metrics or {}
        cfg = job.cfg
        nproc = distributed.resolve_nproc((cfg.get("distributed") or {}).get("nproc", 1))
        record = start_record(cfg, ctx, job.run_dir, job.resume_from)

        def body() -> dict:
            if nproc > 1:
                from rsdet.engine.launch import spawn

                return spawn(cfg, record, job.resume_from, nproc)
            from rsdet.engine.trainer import train

            return train(cfg, record, resume_from=job.resume_from, state=job.state)

        return run_recorded(record, job.run_dir, body, on_completed=_print_metrics)
    finally:
        job.release()


def _run_job_ranked(cfg: DictConfig, ctx: dict, env: tuple[int, int, int]) -> dict:
    """One rank of a run started by an external launcher (torchrun, SLURM tasks): rank 0 decides what the
    job does, holds the run's lock and keeps the record; every rank trains (``run_recorded`` closes the
    record)."""
    from rsdet.engine import distributed
    from rsdet.engine.trainer import train
    from rsdet.records import RunRecord

    rank, world_size, local_rank = env
    if str((cfg.get("distributed") or {}).get("nproc", 1)) not in ("1", "auto", str(world_size)) and rank == 0:
        log.warning("distributed.nproc=%s is ignored: the launcher started %d processes", cfg.distributed.nproc,
                    world_size)
    dist = distributed.init(cfg.get("distributed"), cfg.device, rank=rank, world_size=world_size,
                            local_rank=local_rank, launcher="external")
    record = job = None
    try:
        if dist.is_main:
            job = _prepare(cfg, ctx)
            if job.action == "train":
                record = start_record(job.cfg, ctx, job.run_dir, job.resume_from)
                record.update(world_size=world_size)
            plan = (job.action, OmegaConf.to_container(job.cfg, resolve=True), str(job.run_dir),
                    str(job.resume_from) if job.resume_from else None)
        else:
            plan = None
        action, cfg_data, run_dir_s, resume_s = dist.broadcast_object(plan)
        run_dir = Path(run_dir_s)
        if action != "train":
            return RunRecord(run_dir, create=False).metrics or {} if action == "reuse" else {}
        cfg = OmegaConf.create(cfg_data)
        if record is None:
            record = RunRecord(run_dir)
        state = job.state if job is not None else None
        return run_recorded(record, run_dir,
                            lambda: train(cfg, record, resume_from=Path(resume_s) if resume_s else None, dist=dist,
                                          state=state),
                            rank=rank, on_completed=_print_metrics)
    finally:
        if job is not None:
            job.release()
        distributed.shutdown(dist)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_entry(cfg: DictConfig) -> None:
    run_job(cfg)


def _normalise_argv(argv: list[str]) -> list[str]:
    """``+experiment=x`` (the spelling of rsdet <= 0.1) means ``experiment=x``: the group has a null default."""
    return [a[1:] if a.startswith("+experiment=") else a for a in argv]


def _follower_overrides() -> list[str]:
    """Under torchrun, ranks other than 0 would each make a run directory of their own (Hydra's
    ``${now:...}`` differs by a second): they get a hidden scratch directory for their log instead, and
    train into rank 0's run directory, which rank 0 sends them."""
    from rsdet.engine.distributed import external_env

    env = external_env()
    if env is None or env[0] == 0 or "SUBMITIT_FOLDER" in os.environ:
        return []
    scratch = f"outputs/.ranks/rank{env[0]}"
    return ["hydra.output_subdir=null", f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}"]


def _lock_resumed_sweep(argv: list[str], given: list[str]) -> DirLock | None:
    """``-m ... resume=...``: the sweep directory's lock for this command (one resume of a sweep at a time)."""
    if len(argv) == len(given) or not argv[-1].startswith("hydra.sweep.dir="):
        return None
    return DirLock(Path(argv[-1].split("=", 1)[1].strip("'")), what="sweep").acquire()


def _failing_writes_raise() -> object:
    """A write beyond the file-size limit (``ulimit -f``) fails with EFBIG, which the run reports,
    instead of SIGXFSZ killing the process with the record still ``running``; returns the old handler."""
    if not hasattr(signal, "SIGXFSZ"):
        return None
    try:
        return signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except ValueError:  # not the main thread
        return None


def main(argv: list[str]) -> int:
    """Run Hydra with ``argv`` as its command line; exit 1 if any job failed."""
    OUTCOMES.clear()
    try:
        given = list(argv)
        argv = _resume_sweep_argv(given)
        sweep_lock = _lock_resumed_sweep(argv, given)
    except RsdetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    saved, previous_xfsz = sys.argv, _failing_writes_raise()
    sys.argv = ["rsdet train", *_normalise_argv(argv), *_follower_overrides()]
    try:
        _hydra_entry()
    except SystemExit as exc:  # hydra exits on --help / config errors
        return int(exc.code or 0)
    finally:
        sys.argv = saved
        if previous_xfsz is not None:
            signal.signal(signal.SIGXFSZ, previous_xfsz)
        if sweep_lock is not None:
            sweep_lock.release()
    failed = [o for o in OUTCOMES if o["status"] == "failed"]
    reused = [o for o in OUTCOMES if o["status"] == "reused"]
    if len(OUTCOMES) > 1 or reused:
        note = f" ({len(reused)} reused: completed by an earlier run of the sweep)" if reused else ""
        print(f"{len(OUTCOMES) - len(failed)}/{len(OUTCOMES)} jobs completed{note}")
        for o in reused:
            print(f"  reused: {o['run_dir']}")
        for o in failed:
            print(f"  failed: {o['run_dir']}: {o['error']}")
    return 1 if failed else 0
