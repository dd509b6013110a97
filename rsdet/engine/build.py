"""The build step of training: from a composed config to the parts the loop trains with.

``build_training(cfg, dist)`` seeds the RNGs, picks the device and AMP, builds the data sets, the
detector, the schedule, the optimiser, the data-parallel wrapper and the resumable loader, in this
order. The order matters for reproducibility: the detector's initial weights are the first draws
from the freshly seeded global RNG (docs/resume.md, "The data order"), so nothing that draws from
it may move before the detector is built.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rsdet.engine.history import LogState
from rsdet.engine.inference import check_iou_types, pick_device
from rsdet.engine.loader import TrainLoader
from rsdet.engine.schedule import Plan, build_optimizer, make_plan
from rsdet.errors import ConfigError

log = logging.getLogger("rsdet.engine.trainer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_amp(value: Any, device: torch.device) -> torch.dtype | None:
    """``amp``: auto (fp16 on CUDA, off on the CPU) | true/fp16 | bf16 | false → the autocast dtype or None."""
    text = str(value).lower()
    if text in ("false", "none", "off", "0"):
        return None
    if text not in ("auto", "true", "fp16", "float16", "1", "bf16", "bfloat16"):
        raise ConfigError(f"amp={value!r} is not one of auto, true, fp16, bf16, false")
    if device.type != "cuda":
        if text not in ("auto",):
            log.warning("amp=%s is for CUDA; training on %s in float32", value, device)
        return None
    if text in ("bf16", "bfloat16"):
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"amp=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use amp=fp16")
        return torch.bfloat16
    return torch.float16


def data_loader_options(cfg: Any, device: torch.device) -> dict:
    """``num_workers`` (``auto``: enough to keep a GPU fed, 0 on the CPU where workers would compete with
    the training process for the cores), ``pin_memory`` (auto: on CUDA) and ``prefetch_factor``."""
    workers = cfg.get("num_workers", 0)
    if workers in (None, "auto"):
        if device.type == "cuda":
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            per_gpu = max(torch.cuda.device_count(), 1)
            workers = max(1, min(8, cores // per_gpu - 1))
        else:
            workers = 0
    pin = cfg.get("pin_memory", "auto")
    pin = device.type == "cuda" if pin in (None, "auto") else bool(pin)
    return {"num_workers": int(workers), "pin_memory": pin, "prefetch_factor": cfg.get("prefetch_factor")}


def wrap_data_parallel(model: torch.nn.Module, cfg: Any, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (which stays the object that is checkpointed/evaluated)."""
    from torch.nn.parallel import DistributedDataParallel

    dcfg = cfg.get("distributed") or {}
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=bool(dcfg.get("find_unused_parameters", False)))


@dataclass
class Parts:
    """Everything one rank trains and evaluates with. ``model`` is the detector that is checkpointed
    and evaluated; ``net`` is what the step calls (``model`` itself, or its DDP wrapper)."""

    cfg: Any
    dist: Any
    device: torch.device
    amp_dtype: torch.dtype | None
    global_batch: int
    train_ds: Any
    val_ds: Any
    model: torch.nn.Module
    net: torch.nn.Module
    plan: Plan
    optimizer: torch.optim.Optimizer
    scaler: Any
    loader: TrainLoader
    logged: LogState

    @property
    def use_amp(self) -> bool:
        return self.amp_dtype is not None


def validate_options(cfg: Any) -> None:
    """The numeric options outside the schedule (``validate_schedule`` checks that), before anything is built."""
    from rsdet.engine.schedule import check_number, validate_schedule

    validate_schedule(cfg.schedule, cfg.get("loss"))
    check_number("seed", cfg.get("seed", 0), integer=True)
    check_number("logger.log_every", (cfg.get("logger") or {}).get("log_every", 10), low=1, integer=True)
    evaluation = cfg.get("eval") or {}
    if evaluation.get("max_images") is not None:
        check_number("eval.max_images", evaluation.max_images, low=1, integer=True, fix="or null (every image)")
    if evaluation.get("every_epochs") is not None:
        check_number("eval.every_epochs", evaluation.every_epochs, low=0, integer=True, fix="or null (only at the end)")
    if cfg.get("num_workers") not in (None, "auto"):
        check_number("num_workers", cfg.num_workers, low=0, integer=True, fix="or auto")


def build_training(cfg: Any, dist) -> Parts:
    """Build the parts of a run of ``cfg`` for this rank (``dist``), in the order the module docstring gives."""
    from rsdet.data.build import build_dataset
    from rsdet.data.coco_dataset import collate_fn
    from rsdet.data.sampling import build_train_sampler
    from rsdet.models import build_detector

    validate_options(cfg)
    seed_everything(int(cfg.seed) + dist.rank)  # rank 0 draws what a single-process run draws
    device = dist.device(cfg.device) if dist.enabled else pick_device(cfg.device)
    amp_dtype = resolve_amp(cfg.get("amp", "auto"), device)
    if cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    global_batch = int(cfg.schedule.batch_size)
    if global_batch % dist.world_size:
        raise ConfigError(f"schedule.batch_size={global_batch} (the global batch) is not divisible by the "
                          f"{dist.world_size} processes; use a multiple of {dist.world_size} "
                          f"(e.g. schedule.batch_size={dist.world_size * max(1, round(global_batch / dist.world_size))})")

    train_ds = build_dataset(cfg.dataset, "train", train=True)
    val_ds = build_dataset(cfg.dataset, cfg.eval.split, train=False) if cfg.eval.enabled else None
    if val_ds is not None:
        check_iou_types(cfg)  # before training, not after it
    log.info("train: %s", train_ds.describe() if hasattr(train_ds, "describe") else len(train_ds))
    if dist.enabled and len(train_ds) < global_batch:
        raise ConfigError(f"the training split has {len(train_ds)} images, fewer than the global batch "
                          f"schedule.batch_size={global_batch}; lower it to at most {len(train_ds)}")
    model = build_detector(cfg, train_ds.num_classes).to(device)
    if dist.enabled and (cfg.get("distributed") or {}).get("sync_bn"):
        if device.type != "cuda":
            raise ConfigError("distributed.sync_bn=true needs CUDA (torch's SyncBatchNorm has no CPU kernel); on "
                              "the CPU use detector.backbone.norm=frozen_bn or gn, whose statistics are per image")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    repeat = build_train_sampler(train_ds, cfg.dataset, seed=int(cfg.seed))  # LVIS repeat-factor sampling or None
    epoch_len = int(round(repeat.expected_length)) if repeat is not None else len(train_ds)
    plan = make_plan(cfg.schedule, cfg.loss, epoch_len)
    optimizer = build_optimizer(model, cfg.schedule, plan)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    net = wrap_data_parallel(model, cfg, device) if dist.enabled else model
    loader = TrainLoader(train_ds, batch_size=global_batch, seed=int(cfg.seed), collate_fn=collate_fn,
                         drop_last=epoch_len > global_batch, rank=dist.rank, world_size=dist.world_size,
                         epoch_len=epoch_len, epoch_order=repeat.indices if repeat is not None else None,
                         **data_loader_options(cfg, device))
    return Parts(cfg=cfg, dist=dist, device=device, amp_dtype=amp_dtype, global_batch=global_batch,
                 train_ds=train_ds, val_ds=val_ds, model=model, net=net, plan=plan, optimizer=optimizer,
                 scaler=scaler, loader=loader, logged=LogState())
