"""Experiment loggers. The run record is the source of truth; W&B mirrors the same keys.

W&B runs in offline mode by default, which needs no network (``wandb sync`` uploads later);
``logger.mode=online`` for users with an account; ``logger=none`` turns it off. Multirun jobs of
one sweep share a W&B group (the sweep directory's name) so they appear together. A resumed run
logs into the W&B run it started (its id is kept in run.json as ``wandb_id``): offline, each start
writes an ``offline-run-*`` folder with that id, and ``wandb sync`` of them fills one run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class NullLogger:
    run_id: str | None = None

    def log(self, row: dict, step: int) -> None:  # noqa: D401 - interface
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def finish(self, status: str = "completed") -> None:
        pass


class WandbLogger(NullLogger):
    def __init__(self, cfg: Any, run_dir: Path, config: dict, group: str | None, name: str, tags: list[str],
                 run_id: str | None = None):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = wandb
        self.run = wandb.init(
            project=cfg.get("project", "rsdet"),
            entity=cfg.get("entity"),
            mode=cfg.get("mode", "offline"),
            dir=str(run_dir),
            config=config,
            group=cfg.get("group") or group,
            name=name,
            tags=list(tags or []),
            reinit="finish_previous",
            **({"id": run_id, "resume": "allow"} if run_id else {}),
        )
        self.run_id = self.run.id

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def summary(self, metrics: dict) -> None:
        for iou_type, values in metrics.items():
            if isinstance(values, dict):
                for k, v in values.items():
                    if isinstance(v, (int, float)):
                        self.run.summary[f"{iou_type}/{k}"] = v

    def finish(self, status: str = "completed") -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


def build_logger(cfg: Any, run_dir: Path, config: dict, group: str | None, name: str, tags: list[str],
                 run_id: str | None = None):
    """The configured logger; ``run_id`` continues that W&B run (a resumed training run)."""
    if cfg.name == "none" or cfg.get("mode") == "disabled":
        return NullLogger()
    if cfg.name != "wandb":
        from rsdet.errors import ConfigError

        raise ConfigError(f"logger={cfg.name!r} is not one of wandb, none")
    try:
        return WandbLogger(cfg, run_dir, config, group, name, tags, run_id=run_id)
    except Exception as exc:  # never let logging kill a training run
        log.warning("W&B could not start (%s); continuing with the run record only. Use logger=none to "
                    "silence this.", exc)
        return NullLogger()
