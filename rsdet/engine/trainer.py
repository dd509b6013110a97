"""The training engine: one function, ``train(cfg, run_dir)``, from a composed config to a run record.

Loop: SGD with warm-up and step decay, optional gradient clipping, AMP on CUDA, a rich progress bar,
``history.jsonl`` rows every ``logger.log_every`` iterations (loss terms, lr, seconds/iteration,
pos:neg instance and task ratios per stage — supplementary Table S7), checkpoints every
``schedule.checkpoint_every`` iterations, then evaluation (COCO/LVIS AP and oLRP) into
``metrics.json``. A NaN/inf loss stops the run naming the iteration and the loss term, keeping the
last good checkpoint; Ctrl-C saves a checkpoint and marks the run interrupted.

Resuming is exact: the checkpoint holds the data loader's position (``rsdet.engine.loader``), the
RNG states and the partial sums of the next history row, so a resumed run computes the same
iterations, history rows and final metrics as the run left alone (docs/resume.md).
"""

from __future__ import annotations

import logging
import signal
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rsdet.engine.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from rsdet.engine.inference import check_iou_types, evaluate_model, pick_device
from rsdet.engine.loader import TrainLoader
from rsdet.engine.loggers import build_logger
from rsdet.engine.schedule import build_optimizer, make_plan, set_lr
from rsdet.errors import TrainingError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class _StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler's preemption, `kill`) stop training at the next
    iteration boundary, where the checkpoint is exact; a second signal stops at once.

    An interrupt in the middle of an iteration would leave the model half-way through it (batch-norm
    statistics already updated by the forward pass, parameters part-way through the optimiser
    step), which no checkpoint can describe."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        self.received = signum
        log.warning("signal %d: stopping after this iteration with a checkpoint (send it again to stop now)", signum)

    def check(self) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"signal {self.received}")

    def __enter__(self) -> _StopSignals:
        try:
            for sig in self._SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def _check_finite(terms: dict[str, torch.Tensor], iteration: int, ckpt_dir: Path) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value.detach()).all():
            raise TrainingError(
                f"loss term '{name}' became {value.item()} at iteration {iteration}. The last good checkpoint "
                f"is kept in {ckpt_dir}. Try a lower learning rate (schedule.lr=...), gradient clipping "
                "(schedule.grad_clip=10) or check the annotations for degenerate boxes."
            )


class _LogState:
    """What the next history row needs: per-key sums and the iteration count since the last row, the
    running count of batches without R-CNN positives, and the clocks (sec_per_iter, train_seconds).
    Checkpointed, so a resumed run writes the rows the uninterrupted run would have written."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0
        self.zero_pos = 0
        self._window_before = 0.0  # seconds of the current row's window spent before this process
        self._train_before = 0.0  # training seconds spent before this process
        self.restart_clock()

    def restart_clock(self) -> None:
        now = time.perf_counter()
        self._window_start = now - self._window_before
        self._train_start = now - self._train_before

    def train_seconds(self) -> float:
        return time.perf_counter() - self._train_start

    def row(self, iteration: int, epoch: int, lr: float, zero_pos: int) -> dict:
        self.zero_pos = zero_pos
        now = time.perf_counter()
        row = {"iteration": iteration, "epoch": epoch, "lr": lr,
               "sec_per_iter": (now - self._window_start) / max(self.count, 1),
               **{k: v / max(self.count, 1) for k, v in self.sums.items()},
               "batches_without_positives": self.zero_pos}
        self.sums.clear()
        self.count = 0
        self._window_start = now
        return row

    def state_dict(self, zero_pos: int | None = None) -> dict:
        if zero_pos is not None:
            self.zero_pos = zero_pos
        now = time.perf_counter()
        return {"sums": dict(self.sums), "count": self.count, "batches_without_positives": self.zero_pos,
                "window_seconds": now - self._window_start, "train_seconds": now - self._train_start}

    def load_state_dict(self, state: dict | None) -> None:
        if not state:  # a checkpoint without logging state: the next row averages from here
            return
        self.sums.clear()
        self.sums.update(state["sums"])
        self.count = int(state["count"])
        self.zero_pos = int(state["batches_without_positives"])
        self._window_before = float(state["window_seconds"])
        self._train_before = float(state["train_seconds"])
        self.restart_clock()


def _evaluate_epoch(cfg, model, val_ds, device, record, logger, iteration: int, epoch: int, console) -> None:
    """Evaluation during training (``eval.every_epochs``): one row of metrics_history.jsonl and W&B
    ``eval/*`` values at this iteration; the model goes back to training mode afterwards."""
    with _progress(console) as progress:
        result = evaluate_model(cfg, model, val_ds, device, record.dir / f"predictions_bbox_epoch{epoch}.json",
                                cfg.eval.get("max_images"), progress=progress)
    model.train()
    record.append_eval({"epoch": epoch, "iteration": iteration, "bbox": result["bbox"]})
    logger.log({f"eval/{k}": v for k, v in result["bbox"].items() if isinstance(v, (int, float))}, step=iteration)
    log.info("epoch %d (iteration %d): AP %.1f", epoch, iteration, 100 * result["bbox"].get("AP", float("nan")))


def train(cfg: Any, record, *, console: Console | None = None, resume_from: Path | None = None) -> dict:
    """Train ``cfg`` into ``record`` (a RunRecord) and return the final metrics."""
    from rsdet.data.build import build_dataset
    from rsdet.data.coco_dataset import collate_fn
    from rsdet.models import build_detector

    console = console or Console()
    seed_everything(int(cfg.seed))
    device = pick_device(cfg.device)
    use_amp = device.type == "cuda" and cfg.get("amp", "auto") in ("auto", True)
    if cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)

    train_ds = build_dataset(cfg.dataset, "train", train=True)
    val_ds = build_dataset(cfg.dataset, cfg.eval.split, train=False) if cfg.eval.enabled else None
    if val_ds is not None:
        check_iou_types(cfg)  # before training, not after it
    log.info("train: %s", train_ds.describe() if hasattr(train_ds, "describe") else len(train_ds))
    model = build_detector(cfg, train_ds.num_classes).to(device)
    plan = make_plan(cfg.schedule, cfg.loss, len(train_ds))
    optimizer = build_optimizer(model, cfg.schedule, plan)
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    start_iter = 0
    ckpt_dir = record.checkpoint_dir
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        if state.get("criterion"):  # checkpoints of rsdet <= 0.1 kept the loss state beside the model
            state["model"].setdefault("criterion._extra_state", state["criterion"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_iter = int(state["iteration"])
        log.info("resumed from %s at iteration %d", resume_from, start_iter)

    loader = TrainLoader(train_ds, batch_size=int(cfg.schedule.batch_size), seed=int(cfg.seed), collate_fn=collate_fn,
                         num_workers=int(cfg.get("num_workers", 0)), drop_last=len(train_ds) > cfg.schedule.batch_size)
    logged = _LogState()
    if resume_from is not None:
        if state.get("data"):
            loader.load_state_dict(state["data"], source=str(resume_from))
        else:
            loader.seek_iteration(start_iter)
            log.warning("%s was written by an older rsdet without the data loader's position; continuing at "
                        "epoch %d, batch %d with a new order (not the exact batches of the interrupted run)",
                        resume_from, loader.epoch, loader.batch)
        logged.load_state_dict(state.get("log"))
    dropped = record.drop_history_after(start_iter)
    if dropped:
        log.info("moved %d history rows logged after iteration %d to %s", dropped, start_iter,
                 record.dir / "history.dropped.jsonl")
    logger = build_logger(cfg.logger, record.dir, OmegaConf.to_container(cfg, resolve=True),
                          group=(record.info.get("multirun") or {}).get("sweep_name"),
                          name=record.dir.name, tags=list(cfg.get("tags", [])),
                          run_id=record.info.get("wandb_id") if resume_from is not None else None)
    record.update(device=str(device), amp=use_amp, max_iters=plan.max_iters, base_lr=plan.base_lr,
                  num_classes=train_ds.num_classes, **({"wandb_id": logger.run_id} if logger.run_id else {}))
    log_every = int(cfg.logger.get("log_every", 10))
    sums = logged.sums
    zero_pos = logged.zero_pos
    iteration = start_iter
    extra = {"num_classes": train_ds.num_classes}
    last_stage_pos = f"{model.stages[-1].name}/num_pos"  # "batches without positives" of the final stage

    every_epochs = int(cfg.eval.get("every_epochs") or 0) if val_ds is not None else 0
    position = loader.state_dict()  # the loader's position at the last iteration boundary
    mid_iteration = False  # the model has seen part of an iteration (forward pass started)

    def checkpoint(it: int) -> None:
        if (ckpt_dir / "last.pt").is_file() and record.info.get("iteration") == it:
            return  # this iteration's checkpoint is already written
        save_checkpoint(ckpt_dir, model=model, optimizer=optimizer, iteration=it, scaler=scaler, extra=extra,
                        data=position, log=logged.state_dict(zero_pos))
        record.update(iteration=it)

    if resume_from is not None:  # last, so that nothing above (W&B, the loader) draws from the restored RNGs
        set_rng_state(state["rng"])
    model.train()
    batches = iter(loader)
    logged.restart_clock()
    try:
        with _StopSignals() as stop, _progress(console) as progress:
            task = progress.add_task("training", total=plan.max_iters, completed=start_iter, info="")
            while iteration < plan.max_iters:
                stop.check()
                epoch, (images, targets) = next(batches)
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
                lr = set_lr(optimizer, plan, iteration)
                mid_iteration = True
                with torch.autocast(device.type, enabled=use_amp):
                    terms, stats = model(images, targets)
                _check_finite(terms, iteration + 1, ckpt_dir)
                total = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(total).backward()
                    scaler.unscale_(optimizer)
                else:
                    total.backward()
                if cfg.schedule.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.schedule.grad_clip))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                iteration += 1
                position = loader.state_dict()
                zero_pos += int(stats.get(last_stage_pos, 1) == 0)
                for k, v in terms.items():
                    sums[f"loss/{k}"] += float(v.detach())
                sums["loss/total"] += float(total.detach())
                for k, v in stats.items():
                    sums[f"ratio/{k}"] += float(v)
                logged.count += 1
                progress.update(task, advance=1, info=f"loss {float(total.detach()):.3f} lr {lr:.4f}")
                if iteration % log_every == 0 or iteration == plan.max_iters:
                    row = logged.row(iteration, epoch, lr, zero_pos)
                    record.append_history(row)
                    logger.log(row, step=iteration)
                mid_iteration = False
                if every_epochs and iteration % plan.iters_per_epoch == 0 and iteration < plan.max_iters \
                        and (iteration // plan.iters_per_epoch) % every_epochs == 0:
                    _evaluate_epoch(cfg, model, val_ds, device, record, logger, iteration,
                                    iteration // plan.iters_per_epoch, console)
                if iteration % int(cfg.schedule.checkpoint_every) == 0:
                    checkpoint(iteration)
        checkpoint(iteration)
    except KeyboardInterrupt:
        if mid_iteration:
            log.warning("stopped in the middle of iteration %d; keeping the last checkpoint in %s", iteration + 1,
                        ckpt_dir)
        else:
            checkpoint(iteration)
        logger.finish("interrupted")
        raise
    except Exception:
        logger.finish("failed")
        raise
    metrics: dict[str, Any] = {"iterations": iteration, "train_seconds": logged.train_seconds()}
    if val_ds is not None:
        with _progress(console) as progress:
            metrics.update(evaluate_model(cfg, model, val_ds, device, record.predictions_path("bbox"),
                                          cfg.eval.get("max_images"), progress=progress))
    if every_epochs:  # Table S2: AP after epoch E beside the final AP (metric "epoch<E>/AP" in rsdet report)
        for row in record.read_eval_history():
            metrics[f"epoch{row['epoch']}"] = row["bbox"]
    record.write_metrics(metrics)
    logger.summary(metrics)
    logger.finish("completed")
    return metrics

