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
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from rsdet.errors import RsdetError
from rsdet.paths import conf_dir

log = logging.getLogger("rsdet.train")
CONF_DIR = str(conf_dir())  # conf/ of the checkout, or rsdet/conf of an installed wheel
_OUTCOMES: list[dict] = []

# Hydra-internal keys never shown as a run's "choices".
_HIDDEN_GROUPS = ("hydra/",)
_RESUME_NEUTRAL = ("resume", "device", "logger", "logger.mode", "num_workers", "distributed", "distributed.nproc",
                   "distributed.backend", "distributed.timeout_s")


def _job_context() -> dict:
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith(_HIDDEN_GROUPS) and k != "hydra"}
    overrides = list(hc.overrides.task)
    multirun = None
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir)  # outputs/multirun/<date>/<time>: "<date>/<time>" names the W&B group
        multirun = {"sweep_dir": hc.sweep.dir, "sweep_name": f"{sweep.parent.name}/{sweep.name}", "job_num": hc.job.num}
    return {"run_dir": Path(hc.runtime.output_dir), "choices": choices, "overrides": overrides, "multirun": multirun}


def _key_overrides(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in _RESUME_NEUTRAL)


def find_resumable(resume, overrides: list[str], outputs: Path) -> Path | None:
    """The run directory to continue: an explicit path, or (``resume=true``) the newest unfinished run
    under ``outputs/`` started with the same overrides."""
    from rsdet.records import find_runs

    if isinstance(resume, str) and resume.lower() not in ("true", "false"):
        path = Path(resume).expanduser()
        if not (path / "checkpoints" / "last.pt").is_file():
            raise RsdetError(f"resume={resume}: {path / 'checkpoints' / 'last.pt'} does not exist; give a run "
                             "directory that has a checkpoint")
        return path
    wanted = _key_overrides(overrides)
    if not outputs.is_dir():
        return None
    candidates = []
    for run in find_runs(outputs):
        info = run.info or {}
        if info.get("status") == "completed" or not (run.checkpoint_dir / "last.pt").is_file():
            continue
        if _key_overrides(info.get("overrides", [])) == wanted:
            candidates.append(run.dir)
    return max(candidates, key=lambda p: (p / "checkpoints" / "last.pt").stat().st_mtime) if candidates else None


def _is_resume(value) -> bool:
    return value not in (False, None) and str(value).lower() not in ("false", "none", "null")


def _argv_overrides(argv: list[str]) -> list[str]:
    """The config overrides of a command line (no flags, no ``hydra.*`` settings)."""
    return [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra.")]


def find_sweep(overrides: list[str], outputs: Path) -> Path | None:
    """The newest sweep directory under ``outputs/multirun`` whose sweep was started with the same
    overrides as ``overrides`` (those of ``_RESUME_NEUTRAL`` aside), or None."""
    import yaml

    wanted = _key_overrides(overrides)
    found = []
    for manifest in (outputs / "multirun").glob("*/*/multirun.yaml"):
        try:
            task = ((yaml.safe_load(manifest.read_text()) or {}).get("hydra") or {}).get("overrides", {}).get("task")
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            log.warning("skipping %s while looking for the sweep to resume (%s)", manifest, exc)
            continue
        if isinstance(task, list) and _key_overrides([str(t) for t in task]) == wanted:
            found.append(manifest.parent)
    return max(found, key=lambda d: (d.parent.name, d.name, d.stat().st_mtime)) if found else None


def _resume_sweep_argv(argv: list[str]) -> list[str]:
    """``-m ... resume=true``: point Hydra at the sweep directory to resume (``resume=DIR`` names it)."""
    if not ({"-m", "--multirun"} & set(argv)):
        return argv
    resume = next((a.split("=", 1)[1] for a in reversed(_argv_overrides(argv)) if a.split("=", 1)[0] == "resume"), None)
    if resume is None or not _is_resume(resume) or any(a.startswith("hydra.sweep.dir=") for a in argv):
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


def _sweep_job_to_resume(run_dir: Path, overrides: list[str]) -> tuple[str, Path | None]:
    """What to do with a resumed sweep's job folder: ("reuse" | "resume" | "start", checkpoint)."""
    from rsdet.records import RUN_FILE, RunRecord

    if not (run_dir / RUN_FILE).is_file():
        return "start", None
    record = RunRecord(run_dir, create=False)
    if _key_overrides(record.info.get("overrides", [])) != _key_overrides(overrides):
        raise RsdetError(f"{run_dir} holds a run with overrides {record.info.get('overrides')}, not this job's "
                         f"{overrides}; the sweep's jobs are numbered differently. Resume it with the same "
                         "sweep overrides in the same order, or start a new sweep without resume=...")
    if record.status == "completed" and record.metrics:
        return "reuse", None
    checkpoint = run_dir / "checkpoints" / "last.pt"
    return ("resume", checkpoint) if checkpoint.is_file() else ("start", None)


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


def _resumed_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The run's own config.yaml with this command's device and resume, and its num_workers,
    distributed block (how many processes continue it) and logger where this command sets them (they do not change results; the run's own
    ``logger.log_every`` stays, as it sets which iterations get a history row)."""
    old = OmegaConf.load(run_dir / "config.yaml")
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    with open_dict(old):
        old.device = cfg.device
        old.resume = cfg.resume
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


def _in_submitit() -> bool:
    """A job of ``hydra/launcher=slurm|local`` (submitit): a requeued job resumes from its checkpoint."""
    return "SUBMITIT_FOLDER" in os.environ or "SUBMITIT_EXECUTOR" in os.environ


def _prepare(cfg: DictConfig, ctx: dict) -> tuple[str, DictConfig, Path, Path | None]:
    """What this job does: ("train", cfg, run_dir, checkpoint to resume or None), ("reuse", ...) for a
    completed sweep job, or ("skip", ...) when the job cannot run (already recorded as failed)."""
    run_dir = ctx["run_dir"]
    resume_from = None
    auto = ctx["multirun"] and _in_submitit() and (run_dir / "run.json").is_file()  # a requeued job
    if (_is_resume(cfg.resume) or auto) and ctx["multirun"]:  # the sweep directory is the resumed one (main)
        try:
            action, checkpoint = _sweep_job_to_resume(run_dir, ctx["overrides"])
        except RsdetError as exc:
            log.error("%s", exc)
            _OUTCOMES.append({"run_dir": str(run_dir), "status": "failed", "error": str(exc)})
            return "skip", cfg, run_dir, None
        if action == "reuse":
            log.info("job %s completed earlier; reusing %s", ctx["multirun"]["job_num"], run_dir)
            _OUTCOMES.append({"run_dir": str(run_dir), "status": "reused"})
            return "reuse", cfg, run_dir, None
        if action == "resume":
            log.info("resuming job %s in %s", ctx["multirun"]["job_num"], run_dir)
            cfg, resume_from = _resumed_config(run_dir, cfg, ctx["overrides"]), checkpoint
    elif _is_resume(cfg.resume):
        outputs = Path(os.getcwd()) / "outputs"
        previous = find_resumable(cfg.resume, ctx["overrides"], outputs)
        if previous is None:
            log.warning("resume=%s: no unfinished run with the same overrides under %s; starting fresh",
                        cfg.resume, outputs)
        else:
            log.info("resuming the run in %s", previous)
            cfg, run_dir = _resumed_config(previous, cfg, ctx["overrides"]), previous
            resume_from = previous / "checkpoints" / "last.pt"
    return "train", cfg, run_dir, resume_from


def _start_record(cfg: DictConfig, ctx: dict, run_dir: Path, resume_from: Path | None):
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


def _interrupted(record, exc: KeyboardInterrupt, run_dir: Path) -> None:
    requeue = getattr(exc, "requeue", None)
    record.reload()
    if requeue is not None:
        record.finish("interrupted", error="stopped by the job scheduler (preemption or time limit) with a "
                                           "checkpoint; the job is requeued and resumes from it")
        log.warning("preempted: checkpoint kept in %s; requeueing the job", record.checkpoint_dir)
        requeue(exc.signum, None)  # submitit: requeue and exit (rank 0); returns on the other ranks
        return
    record.finish("interrupted", error="interrupted by the user (Ctrl-C) or a signal; continue with resume=true")
    log.warning("interrupted; checkpoint kept in %s — continue with: rsdet train resume=%s", record.checkpoint_dir,
                run_dir)


def _failed(record, exc: Exception, run_dir: Path, extra_errors: list[dict] | None = None) -> None:
    """Mark the record failed; in a data-parallel run name the rank that failed first for a reason of its own."""
    from rsdet.engine.distributed import root_cause

    error, tb = f"{type(exc).__name__}: {exc}", getattr(exc, "worker_traceback", None) or traceback.format_exc()
    cause = root_cause(extra_errors or [])
    if cause is not None and cause.get("error") != error:
        error, tb = f"rank {cause['rank']} failed: {cause['error']}", cause.get("traceback") or tb
    record.reload()
    record.finish("failed", error=error, traceback=tb)
    if isinstance(exc, RsdetError):
        log.error("run failed: %s", error)
    else:
        log.exception("run failed")
    _OUTCOMES.append({"run_dir": str(run_dir), "status": "failed", "error": error})


def run_job(cfg: DictConfig) -> dict:
    """Train + evaluate one composed config into its Hydra output directory (or the resumed one)."""
    from rsdet.engine import distributed

    ctx = _job_context()
    env = distributed.external_env()
    if env is not None:
        return _run_job_ranked(cfg, ctx, env)
    action, cfg, run_dir, resume_from = _prepare(cfg, ctx)
    if action == "skip":
        return {}
    if action == "reuse":
        from rsdet.records import RunRecord

        return RunRecord(run_dir, create=False).metrics or {}
    nproc = distributed.resolve_nproc((cfg.get("distributed") or {}).get("nproc", 1))
    record = _start_record(cfg, ctx, run_dir, resume_from)
    try:
        if nproc > 1:
            from rsdet.engine.launch import spawn

            metrics = spawn(cfg, record, resume_from, nproc)
        else:
            from rsdet.engine.trainer import train

            metrics = train(cfg, record, resume_from=resume_from)
    except KeyboardInterrupt as exc:
        _interrupted(record, exc, run_dir)
        raise
    except Exception as exc:  # the record must say why; multirun goes on with the next job
        _failed(record, exc, run_dir)
        return {}
    record.reload()
    record.finish("completed")
    _OUTCOMES.append({"run_dir": str(run_dir), "status": "completed"})
    _print_metrics(metrics, run_dir)
    return metrics


def _run_job_ranked(cfg: DictConfig, ctx: dict, env: tuple[int, int, int]) -> dict:
    """One rank of a run started by an external launcher (torchrun, SLURM tasks): rank 0 decides what the
    job does and keeps the record; every rank trains. A rank that fails leaves its error report and
    marks the record failed itself, in case rank 0 is killed before it can."""
    from rsdet.engine import distributed
    from rsdet.engine.trainer import train
    from rsdet.records import RunRecord

    rank, world_size, local_rank = env
    if str((cfg.get("distributed") or {}).get("nproc", 1)) not in ("1", "auto", str(world_size)) and rank == 0:
        log.warning("distributed.nproc=%s is ignored: the launcher started %d processes", cfg.distributed.nproc,
                    world_size)
    dist = distributed.init(cfg.get("distributed"), cfg.device, rank=rank, world_size=world_size,
                            local_rank=local_rank, launcher="external")
    record = run_dir = None
    try:
        if dist.is_main:
            action, cfg, run_dir, resume_from = _prepare(cfg, ctx)
            if action == "train":
                record = _start_record(cfg, ctx, run_dir, resume_from)
                record.update(world_size=world_size)
            plan = (action, OmegaConf.to_container(cfg, resolve=True), str(run_dir),
                    str(resume_from) if resume_from else None)
        else:
            plan = None
        action, cfg_data, run_dir_s, resume_s = dist.broadcast_object(plan)
        run_dir = Path(run_dir_s)
        if action != "train":
            return RunRecord(run_dir, create=False).metrics or {} if action == "reuse" else {}
        cfg = OmegaConf.create(cfg_data)
        if record is None:
            record = RunRecord(run_dir)
        try:
            metrics = train(cfg, record, resume_from=Path(resume_s) if resume_s else None, dist=dist)
        except KeyboardInterrupt as exc:
            if dist.is_main:
                _interrupted(record, exc, run_dir)
            elif getattr(exc, "requeue", None) is not None:
                exc.requeue(exc.signum, None)
            raise
        except Exception as exc:
            distributed.write_error(run_dir, rank, exc)
            if dist.is_main:
                time.sleep(1.0)  # let a peer whose failure broke this rank's collective leave its report
            _failed(record, exc, run_dir, distributed.read_errors(run_dir))
            return {}
        if dist.is_main:
            record.reload()
            record.finish("completed")
            _OUTCOMES.append({"run_dir": str(run_dir), "status": "completed"})
            _print_metrics(metrics, run_dir)
        return metrics
    finally:
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


def main(argv: list[str]) -> int:
    """Run Hydra with ``argv`` as its command line; exit 1 if any job failed."""
    _OUTCOMES.clear()
    try:
        argv = _resume_sweep_argv(list(argv))
    except RsdetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    saved = sys.argv
    sys.argv = ["rsdet train", *_normalise_argv(argv), *_follower_overrides()]
    try:
        _hydra_entry()
    except SystemExit as exc:  # hydra exits on --help / config errors
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    failed = [o for o in _OUTCOMES if o["status"] == "failed"]
    reused = [o for o in _OUTCOMES if o["status"] == "reused"]
    if len(_OUTCOMES) > 1 or reused:
        note = f" ({len(reused)} reused: completed by an earlier run of the sweep)" if reused else ""
        print(f"{len(_OUTCOMES) - len(failed)}/{len(_OUTCOMES)} jobs completed{note}")
        for o in reused:
            print(f"  reused: {o['run_dir']}")
        for o in failed:
            print(f"  failed: {o['run_dir']}: {o['error']}")
    return 1 if failed else 0
