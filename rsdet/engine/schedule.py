"""Optimiser and learning-rate schedule: SGD, linear warm-up, step decay — the "standard training"
of the RS Loss supplementary (Section S2.2); conventions in docs/training.md.

The learning rate given by a recipe (``loss.lr`` or ``schedule.lr``) is for
``schedule.reference_batch`` images per iteration; it is scaled linearly to the actual
``schedule.batch_size`` (Goyal et al.'s rule), the usual fix when reproducing a 4-GPU × 4-image
paper recipe on fewer GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rsdet.errors import ConfigError


@dataclass
class Plan:
    """The resolved schedule in iterations."""

    base_lr: float
    max_iters: int
    steps: list[int]
    warmup_iters: int
    warmup_ratio: float
    iters_per_epoch: int

    def lr_factor(self, it: int) -> float:
        """Multiplier of base_lr at iteration ``it`` (0-based)."""
        factor = 0.1 ** sum(it >= s for s in self.steps)
        if it < self.warmup_iters:
            alpha = it / max(self.warmup_iters, 1)
            factor *= self.warmup_ratio * (1 - alpha) + alpha
        return factor


def make_plan(schedule: Any, loss: Any, dataset_len: int) -> Plan:
    batch = int(schedule.batch_size)
    if batch < 1:
        raise ConfigError(f"schedule.batch_size={batch} must be at least 1")
    lr = schedule.get("lr") if schedule.get("lr") is not None else loss.lr
    base_lr = float(lr) * batch / float(schedule.get("reference_batch") or batch)
    iters_per_epoch = max(1, math.ceil(dataset_len / batch))
    max_iters = schedule.get("max_iters")
    epochs = float(schedule.epochs)
    if max_iters is None:
        max_iters = int(round(epochs * iters_per_epoch))
    max_iters = int(max_iters)
    # steps are given in epochs; with an explicit max_iters they scale with it
    scale = max_iters / epochs
    steps = [int(round(s * scale)) for s in schedule.steps]
    return Plan(base_lr, max_iters, steps, int(schedule.warmup_iters), float(schedule.warmup_ratio), iters_per_epoch)


def build_optimizer(model: torch.nn.Module, schedule: Any, plan: Plan) -> torch.optim.Optimizer:
    """SGD with momentum (every recipe of the paper) or AdamW (``schedule.optimizer=adamw``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    kind = schedule.get("optimizer", "sgd")
    if kind == "sgd":
        return torch.optim.SGD(params, lr=plan.base_lr, momentum=float(schedule.momentum),
                               weight_decay=float(schedule.weight_decay))
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=plan.base_lr, weight_decay=float(schedule.weight_decay))
    raise ConfigError(f"schedule.optimizer={kind!r} is not one of sgd, adamw")


def set_lr(optimizer: torch.optim.Optimizer, plan: Plan, it: int) -> float:
    lr = plan.base_lr * plan.lr_factor(it)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
