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


def check_number(key: str, value: Any, *, low: float | None = None, high: float | None = None, integer: bool = False,
            low_open: bool = False, high_open: bool = False, fix: str = "") -> float:
    """``value`` of option ``key`` as a finite number in the given range, or a ConfigError naming both."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
        ok = False
    else:
        ok = math.isfinite(number)
    if ok and integer:
        ok = number.is_integer()
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"{key}={value!r} must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}"
                          f"{'; ' + fix if fix else ''}")
    return number


def validate_schedule(schedule: Any, loss: Any) -> None:
    """Every numeric option of the schedule, checked before anything is built: a NaN, inf or negative
    learning rate (or momentum, decay, warm-up, ...) is a clear error here instead of a torch
    traceback or a diverging run later."""
    lr_key = "schedule.lr" if schedule.get("lr") is not None else "loss.lr"
    lr = schedule.get("lr") if schedule.get("lr") is not None else (loss.get("lr") if loss is not None else None)
    check_number(lr_key, lr, low=0, low_open=True, fix="the recipes use 0.001-0.02 (docs/training.md)")
    check_number("schedule.batch_size", schedule.get("batch_size"), low=1, integer=True)
    if schedule.get("reference_batch") is not None:
        check_number("schedule.reference_batch", schedule.reference_batch, low=1, integer=True, fix="or null")
    check_number("schedule.epochs", schedule.get("epochs"), low=0, low_open=True)
    if schedule.get("max_iters") is not None:
        check_number("schedule.max_iters", schedule.max_iters, low=0, integer=True, fix="or null (from schedule.epochs)")
    steps = schedule.get("steps") or []
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise ConfigError(f"schedule.steps={steps!r} must be a list of epochs, e.g. [8, 11]")
    for i, step in enumerate(steps):
        check_number(f"schedule.steps[{i}]", step, low=0)
    check_number("schedule.warmup_iters", schedule.get("warmup_iters", 0), low=0, integer=True)
    check_number("schedule.warmup_ratio", schedule.get("warmup_ratio", 1.0), low=0, high=1)
    if schedule.get("optimizer", "sgd") == "sgd":
        check_number("schedule.momentum", schedule.get("momentum", 0.0), low=0, high=1, high_open=True)
    check_number("schedule.weight_decay", schedule.get("weight_decay", 0.0), low=0)
    if schedule.get("grad_clip"):
        check_number("schedule.grad_clip", schedule.grad_clip, low=0, low_open=True, fix="or null (no clipping)")
    check_number("schedule.checkpoint_every", schedule.get("checkpoint_every", 1), low=1, integer=True)


def make_plan(schedule: Any, loss: Any, dataset_len: int) -> Plan:
    validate_schedule(schedule, loss)
    batch = int(schedule.batch_size)
    lr = schedule.get("lr") if schedule.get("lr") is not None else loss.lr
    base_lr = float(lr) * batch / float(schedule.get("reference_batch") or batch)
    if not (math.isfinite(base_lr) and base_lr > 0):  # a finite lr can overflow (or vanish) when scaled
        key = "schedule.lr" if schedule.get("lr") is not None else "loss.lr"
        raise ConfigError(f"{key}={lr!r} scaled to schedule.batch_size={batch} (from reference_batch="
                          f"{schedule.get('reference_batch')}) is {base_lr!r}, not a usable learning rate; the "
                          "recipes use 0.001-0.02 (docs/training.md)")
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
                               weight_decay=float(schedule.weight_decay), foreach=True)
    if kind == "adamw":
        # foreach: one multi-tensor kernel per update instead of a Python loop over parameters, the
        # same values bit for bit on the CPU (tests/engine/test_schedule.py; docs/performance.md)
        return torch.optim.AdamW(params, lr=plan.base_lr, weight_decay=float(schedule.weight_decay), foreach=True)
    raise ConfigError(f"schedule.optimizer={kind!r} is not one of sgd, adamw")


def set_lr(optimizer: torch.optim.Optimizer, plan: Plan, it: int) -> float:
    lr = plan.base_lr * plan.lr_factor(it)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
