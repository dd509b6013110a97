"""``rsdet train``: Hydra composes ``conf/train.yaml``; each (multirun) job writes one run record.

A failing multirun job does not stop the sweep: its record says ``failed`` with the error, the
remaining jobs run, and the command exits 1 at the end with a summary.
"""

from __future__ import annotations

import logging
import os
import sys
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
_RESUME_NEUTRAL = ("resume", "device", "logger", "logger.mode", "num_workers")


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


def _print_metrics(metrics: dict, run_dir: Path) -> None:
    from rich.console import Console

    from rsdet.evaluation.evaluator import SUMMARY_KEYS
    from rsdet.evaluation.sweep import metrics_table

    bbox = metrics.get("bbox") or {}
    console = Console()
    console.print(metrics_table(bbox, [k for k in SUMMARY_KEYS if k in bbox], title=f"box metrics — {run_dir}",
                                horizontal=True))
    console.print(f"train {metrics.get('train_seconds', 0):.0f}s, eval {metrics.get('eval_seconds', 0):.0f}s, "
                  f"{metrics.get('iterations', 0)} iterations")


def run_job(cfg: DictConfig) -> dict:
    """Train + evaluate one composed config into its Hydra output directory (or the resumed one)."""
    from rsdet.engine.trainer import train
    from rsdet.records import RunRecord

    ctx = _job_context()
    run_dir = ctx["run_dir"]
    resume_from = None
    if cfg.resume not in (False, None, "false"):
        outputs = Path(os.getcwd()) / "outputs"
        previous = find_resumable(cfg.resume, ctx["overrides"], outputs)
        if previous is None:
            log.warning("resume=%s: no unfinished run with the same overrides under %s; starting fresh",
                        cfg.resume, outputs)
        else:
            log.info("resuming the run in %s", previous)
            old = OmegaConf.load(previous / "config.yaml")
            with open_dict(old):
                old.device = cfg.device
                old.resume = cfg.resume
            cfg, run_dir = old, previous
            resume_from = previous / "checkpoints" / "last.pt"

    record = RunRecord(run_dir)
    record.write_config(cfg)
    if resume_from is not None:  # keep the original choices/overrides; start() notes the resume time
        info = record.info
        record.start(info.get("choices"), info.get("overrides"), multirun=info.get("multirun"))
    else:
        record.start(ctx["choices"], ctx["overrides"], multirun=ctx["multirun"])
    try:
        metrics = train(cfg, record, resume_from=resume_from)
    except KeyboardInterrupt:
        record.finish("interrupted", error="interrupted by the user (Ctrl-C); continue with resume=true")
        log.warning("interrupted; checkpoint kept in %s — continue with: rsdet train resume=%s", record.checkpoint_dir,
                    run_dir)
        raise
    except Exception as exc:  # the record must say why; multirun goes on with the next job
        record.finish("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        if isinstance(exc, RsdetError):
            log.error("run failed: %s", exc)
        else:
            log.exception("run failed")
        _OUTCOMES.append({"run_dir": str(run_dir), "status": "failed", "error": str(exc)})
        return {}
    record.finish("completed")
    _OUTCOMES.append({"run_dir": str(run_dir), "status": "completed"})
    _print_metrics(metrics, run_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_entry(cfg: DictConfig) -> None:
    run_job(cfg)


def _normalise_argv(argv: list[str]) -> list[str]:
    """``+experiment=x`` (the spelling of rsdet <= 0.1) means ``experiment=x``: the group has a null default."""
    return [a[1:] if a.startswith("+experiment=") else a for a in argv]


def main(argv: list[str]) -> int:
    """Run Hydra with ``argv`` as its command line; exit 1 if any job failed."""
    _OUTCOMES.clear()
    saved = sys.argv
    sys.argv = ["rsdet train", *_normalise_argv(argv)]
    try:
        _hydra_entry()
    except SystemExit as exc:  # hydra exits on --help / config errors
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    failed = [o for o in _OUTCOMES if o["status"] == "failed"]
    if len(_OUTCOMES) > 1:
        print(f"{len(_OUTCOMES) - len(failed)}/{len(_OUTCOMES)} jobs completed")
        for o in failed:
            print(f"  failed: {o['run_dir']}: {o['error']}")
    return 1 if failed else 0
