"""Experiment loggers. The run record is the source of truth; W&B mirrors the same keys.

W&B runs in offline mode by default, which needs no network (``wandb sync`` uploads later);
``logger.mode=online`` for users with an account; ``logger=none`` turns it off. Multirun jobs of
one sweep share a W&B group (the sweep directory's name) so they appear together. A resumed run
logs into the W&B run it started (its id is kept in run.json as ``wandb_id``): offline, each start
writes an ``offline-run-*`` folder with that id, and ``wandb sync`` of them fills one run.

At each evaluation (``log_evaluation``) the W&B logger also logs media (:mod:`rsdet.vis.wandb_media`):
a table of the first ``logger.media_images`` validation images with predicted and ground-truth
overlays (0 turns it off), the PR curves the evaluator computed (the metrics' ``pr_curve``: IoU 0.50,
0.75 and .50:.95; ``logger.pr_curves``) and the oLRP components; a completed run logs its checkpoint and run record as an Artifact
(``logger.log_checkpoint``). In offline mode the files W&B stages for tables and artifacts go into
the offline run folder (``offline-run-*/staging``) instead of the user's W&B data folder, so the
run folder holds everything ``wandb sync`` uploads. docs/visualisation.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


class NullLogger:
    run_id: str | None = None
    pr_curves: bool = False  # whether log_evaluation plots PR curves (the evaluation then computes them)

    def log(self, row: dict, step: int) -> None:  # noqa: D401 - interface
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def log_evaluation(self, cfg: Any, result: dict, *, model, dataset, device, predictions: Path | None,
                       step: int) -> None:
        """Media of one evaluation (``result``: ``evaluate_model``'s output, ``predictions`` its box
        results file); a no-op without W&B."""

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
        self.run_dir = Path(run_dir)
        self.offline = cfg.get("mode", "offline") == "offline"
        self.media_images = int(cfg.get("media_images", 8) or 0)
        self.pr_curves = bool(cfg.get("pr_curves", True))
        self.log_checkpoint = bool(cfg.get("log_checkpoint", True))

    @contextlib.contextmanager
    def _staging(self) -> Iterator[None]:
        """Offline, W&B copies table media and artifact files into ``$WANDB_DATA_DIR/artifacts/staging``
        (the user's data folder by default): point it into the offline run folder meanwhile, unless
        the user chose a folder."""
        if not self.offline or os.environ.get("WANDB_DATA_DIR"):
            yield
            return
        os.environ["WANDB_DATA_DIR"] = str(Path(self.run.dir).parent / "staging")
        try:
            yield
        finally:
            os.environ.pop("WANDB_DATA_DIR", None)

    def log_evaluation(self, cfg: Any, result: dict, *, model, dataset, device, predictions: Path | None,
                       step: int) -> None:
        from rsdet.vis import wandb_media
        from rsdet.vis.pr import read_pr_curve

        payload: dict[str, Any] = {}
        try:
            if self.media_images > 0 and dataset is not None and model is not None:
                payload["eval/predictions"] = wandb_media.predictions_table(self._wandb, model, dataset, device,
                                                                            self.media_images)
            for iou_type in ("bbox", "segm"):
                metrics = result.get(iou_type)
                if not isinstance(metrics, dict):
                    continue
                plot = wandb_media.olrp_plot(self._wandb, metrics, f"oLRP components ({iou_type}), step {step}")
                if plot is not None:
                    payload[f"eval/{iou_type}/olrp_components"] = plot
                curves = read_pr_curve(metrics) if self.pr_curves else None  # the evaluator's own curves
                plot = curves and wandb_media.pr_plot(self._wandb, curves, f"PR curves ({iou_type}), step {step}")
                if plot:
                    payload[f"eval/{iou_type}/pr_curves"] = plot
            if payload:
                with self._staging():
                    self.run.log(payload, step=step)
        except Exception as exc:  # media must never end a training run
            log.warning("W&B evaluation media not logged (%s: %s)", type(exc).__name__, exc)

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def summary(self, metrics: dict) -> None:
        for iou_type, values in metrics.items():
            if isinstance(values, dict):
                for k, v in values.items():
                    if isinstance(v, (int, float)):
                        self.run.summary[f"{iou_type}/{k}"] = v

    def finish(self, status: str = "completed") -> None:
        with self._staging():
            if status == "completed" and self.log_checkpoint:
                self._log_record(status)
            self.run.finish(exit_code=0 if status == "completed" else 1)

    def _log_record(self, status: str) -> None:
        from rsdet.vis.wandb_media import record_artifact

        try:
            artifact = record_artifact(self._wandb, self.run_dir, f"model-{self.run.id}", status,
                                       metadata={"run_dir": str(self.run_dir)})
            if artifact is None:
                log.warning("no checkpoint in %s: W&B artifact not logged", self.run_dir / "checkpoints")
                return
            self.run.log_artifact(artifact, aliases=["latest", "final"])
        except Exception as exc:
            log.warning("W&B checkpoint artifact not logged (%s: %s)", type(exc).__name__, exc)


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
