"""Input validation shared by the loss functions (clear messages, no silent broadcasting)."""

from __future__ import annotations

import math

import torch

from rsdet.errors import RsdetError


class LossInputError(RsdetError, ValueError):
    """A loss received tensors or settings it cannot use (wrong shape, dtype, device or value)."""


def check_pair(name: str, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Logits must be floating point; targets must have exactly their shape and device."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise LossInputError(
            f"{name}: logits must be a floating-point tensor, got "
            f"{type(logits).__name__ if not isinstance(logits, torch.Tensor) else logits.dtype}; "
            "pass the raw classifier outputs (before sigmoid)")
    if not isinstance(targets, torch.Tensor):
        raise LossInputError(f"{name}: targets must be a tensor, got {type(targets).__name__}")
    if targets.shape != logits.shape:
        raise LossInputError(
            f"{name}: targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}; "
            "build one target per logit (flatten both the same way)")
    if targets.device != logits.device:
        raise LossInputError(
            f"{name}: targets on {targets.device} but logits on {logits.device}; move them to "
            "the same device")


def check_delta(name: str, delta: float, allow_zero: bool = True) -> float:
    """The smoothing delta must be a finite number >= 0 (> 0 when ``allow_zero`` is False)."""
    try:
        value = float(delta)
    except (TypeError, ValueError):
        raise LossInputError(f"{name}: delta must be a number, got {delta!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise LossInputError(f"{name}: delta must be finite and {bound}, got {delta!r}")
    return value


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 inputs are computed/returned in float64, every other float dtype in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_reduction(name: str, reduction: str, allowed: tuple[str, ...]) -> None:
    if reduction not in allowed:
        raise LossInputError(f"{name}: reduction must be one of {allowed}, got {reduction!r}")
