"""The training engine: one function, ``train(cfg, run_dir)``, from a composed config to a run record.

Loop: SGD with warm-up and step decay, optional gradient clipping, AMP on CUDA, a rich progress bar,
``history.jsonl`` rows every ``logger.log_every`` iterations (loss terms, lr, seconds/iteration,
pos:neg instance and task ratios per stage — supplementary Table S7), checkpoints every
``schedule.checkpoint_every`` iterations, then evaluation (COCO/LVIS AP and oLRP) into
``metrics.json``. A NaN/inf loss stops the run naming the iteration and the loss term, keeping the
last good checkpoint; Ctrl-C saves a checkpoint and marks the run interrupted.
"""

from __future__ import annotations

import contextlib
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
from rsdet.engine.inference import eval_score_thresh, ground_truth_for, pick_device, run_inference
from rsdet.engine.loggers import build_logger
from rsdet.engine.schedule import build_optimizer, make_plan, set_lr
from rsdet.errors import TrainingError
from rsdet.records import dumps

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _infinite_batches(loader, start_epoch: int):
    epoch = start_epoch
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1


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


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a scheduler's preemption, `kill`) is handled like Ctrl-C: checkpoint, then stop."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_finite(terms: dict[str, torch.Tensor], iteration: int, ckpt_dir: Path) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value.detach()).all():
            raise TrainingError(
                f"loss term '{name}' became {value.item()} at iteration {iteration}. The last good checkpoint "
                f"is kept in {ckpt_dir}. Try a lower learning rate (schedule.lr=...), gradient clipping "
                "(schedule.grad_clip=10) or check the annotations for degenerate boxes."
            )


def evaluate_model(cfg: Any, model, val_ds, device, record, console: Console | None = None) -> dict:
    """Inference on the validation split, COCO results file in the run record, then metrics."""
    from rsdet.data.build import dataset_eval_info
    from rsdet.evaluation import evaluate

    info = dataset_eval_info(cfg.dataset, cfg.eval.split)
    thr = eval_score_thresh(cfg)
    start = time.perf_counter()
    with _progress(console or Console()) as progress:
        dets = run_inference(model, val_ds, device, thr, cfg.eval.get("max_images"), progress=progress)
    infer_s = time.perf_counter() - start
    record.predictions_path("bbox").write_text(dumps(dets, indent=None))
    gt = ground_truth_for(info["ann_file"], val_ds, cfg.eval.get("max_images"))
    metrics = evaluate(gt, dets, iou_type="bbox", protocol=info["protocol"], max_dets=cfg.dataset.get("max_dets"))
    return {"bbox": metrics, "eval_seconds": time.perf_counter() - start, "inference_seconds": infer_s,
            "num_detections": len(dets), "score_thresh": thr}


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
        set_rng_state(state["rng"])
        start_iter = int(state["iteration"])
        log.info("resumed from %s at iteration %d", resume_from, start_iter)

    generator = torch.Generator().manual_seed(int(cfg.seed) + start_iter)
    loader = torch.utils.data.DataLoader(
        train_ds, batch_size=int(cfg.schedule.batch_size), shuffle=True, collate_fn=collate_fn,
        num_workers=int(cfg.get("num_workers", 0)), generator=generator, drop_last=len(train_ds) > cfg.schedule.batch_size,
    )
    logger = build_logger(cfg.logger, record.dir, OmegaConf.to_container(cfg, resolve=True),
                          group=(record.info.get("multirun") or {}).get("sweep_name"),
                          name=record.dir.name, tags=list(cfg.get("tags", [])))
    record.update(device=str(device), amp=use_amp, max_iters=plan.max_iters, base_lr=plan.base_lr,
                  num_classes=train_ds.num_classes)
    log_every = int(cfg.logger.get("log_every", 10))
    sums: dict[str, float] = defaultdict(float)
    count = 0
    zero_pos = 0
    last_time = time.perf_counter()
    train_start = time.perf_counter()
    iteration = start_iter
    extra = {"num_classes": train_ds.num_classes}
    last_stage_pos = f"{model.stages[-1].name}/num_pos"  # "batches without positives" of the final stage

    def checkpoint(it: int) -> None:
        save_checkpoint(ckpt_dir, model=model, optimizer=optimizer, iteration=it, scaler=scaler, extra=extra)
        record.update(iteration=it)

    model.train()
    batches = _infinite_batches(loader, start_iter // plan.iters_per_epoch)
    try:
        with _terminate_as_interrupt(), _progress(console) as progress:
            task = progress.add_task("training", total=plan.max_iters, completed=start_iter, info="")
            while iteration < plan.max_iters:
                epoch, (images, targets) = next(batches)
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
                lr = set_lr(optimizer, plan, iteration)
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
                zero_pos += int(stats.get(last_stage_pos, 1) == 0)
                for k, v in terms.items():
                    sums[f"loss/{k}"] += float(v.detach())
                sums["loss/total"] += float(total.detach())
                for k, v in stats.items():
                    sums[f"ratio/{k}"] += float(v)
                count += 1
                progress.update(task, advance=1, info=f"loss {float(total.detach()):.3f} lr {lr:.4f}")
                if iteration % log_every == 0 or iteration == plan.max_iters:
                    now = time.perf_counter()
                    row = {"iteration": iteration, "epoch": epoch, "lr": lr,
                           "sec_per_iter": (now - last_time) / count,
                           **{k: v / count for k, v in sums.items()}, "batches_without_positives": zero_pos}
                    record.append_history(row)
                    logger.log(row, step=iteration)
                    sums.clear()
                    count = 0
                    last_time = now
                if iteration % int(cfg.schedule.checkpoint_every) == 0:
                    checkpoint(iteration)
        checkpoint(iteration)
    except KeyboardInterrupt:
        checkpoint(iteration)
        logger.finish("interrupted")
        raise
    except Exception:
        logger.finish("failed")
        raise
    train_seconds = time.perf_counter() - train_start

    metrics: dict[str, Any] = {"iterations": iteration, "train_seconds": train_seconds}
    if val_ds is not None:
        metrics.update(evaluate_model(cfg, model, val_ds, device, record, console))
    record.write_metrics(metrics)
    logger.summary(metrics)
    logger.finish("completed")
    return metrics

