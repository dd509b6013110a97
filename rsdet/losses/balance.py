"""Task-level balancing of classification vs box loss (supplementary S2.1, Eq. S17, Table S1).

L = L_cls + lambda_box * L_box.  Every balancer is called once per iteration as
``lam = balancer(cls_loss, box_loss, **ctx)`` and returns a detached 0-dim tensor; the caller
adds ``lam * box_loss``.  ``state_dict()`` / ``load_state_dict()`` capture everything a resumed
run needs (only the aLRP balancer has state).

* ``constant``: lambda fixed (Table S1 columns 1, 2, 3).
* ``value``: lambda = L_cls / L_box on the values of this iteration — RS Loss's self-balance
  (supplementary S2.1): the weighted box loss then has the value of the classification loss.
  The official code divides by zero when L_box = 0; here the denominator is max(L_box, 1e-12)
  (docs/losses.md).
* ``magnitude``: lambda = ||dL_cls/ds||_1 / ||dL_box/db||_1 over the classification outputs s and
  the box outputs b.  For RS/AP/aLRP the numerator is available in closed form
  (:func:`rsdet.losses.ranking.ranking_gradient_l1`); otherwise it is taken with autograd.
* ``alrp``: the aLRP epoch-based self-balance (:class:`ALRPSelfBalance`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from rsdet.errors import ConfigError
from rsdet.losses._checks import LossInputError

__all__ = ["TaskBalancer", "ConstantBalance", "ValueSelfBalance", "MagnitudeSelfBalance",
           "ALRPSelfBalance", "build_task_balancer", "BALANCE_KINDS"]

BALANCE_KINDS = ("constant", "value", "magnitude", "alrp")


def _detached_scalar(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).detach()


class TaskBalancer:
    """Interface: ``__call__(cls_loss, box_loss, **ctx) -> lambda`` (detached 0-dim tensor)."""

    kind = "base"

    def __call__(self, cls_loss: torch.Tensor, box_loss: torch.Tensor, **ctx: Any) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


class ConstantBalance(TaskBalancer):
    """lambda = ``value`` every iteration (Table S1: 1, 2 or 3)."""

    kind = "constant"

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(value)

    def __call__(self, cls_loss, box_loss, **ctx):
        return _detached_scalar(self.value, box_loss)


class ValueSelfBalance(TaskBalancer):
    """lambda = L_cls / max(L_box, eps), detached, recomputed every iteration (supplementary S2.1)."""

    kind = "value"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = float(eps)

    def __call__(self, cls_loss, box_loss, **ctx):
        return (cls_loss.detach() / box_loss.detach().clamp(min=self.eps)).to(box_loss.dtype)


def _grad_l1(loss: torch.Tensor, outputs: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    grads = torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)
    total = loss.new_zeros(())
    for g in grads:
        if g is not None:
            total = total + g.abs().sum().to(total.dtype)
    return total.detach()


class MagnitudeSelfBalance(TaskBalancer):
    """lambda = ||dL_cls/ds||_1 / max(||dL_box/db||_1, eps) (supplementary S2.1).

    Context (keyword arguments of ``__call__``):
        box_outputs: tensor(s) b the box loss depends on (the regression head outputs) —
            required; one extra ``autograd.grad`` through the box loss only (graph retained).
        cls_grad_l1: the numerator if already known, e.g. ``ranking_gradient_l1(ranking_loss)``
            (closed form for RS/AP/aLRP, no backward needed); otherwise
        cls_outputs: tensor(s) s to differentiate ``cls_loss`` with autograd (graph retained).
    """

    kind = "magnitude"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = float(eps)

    def __call__(self, cls_loss, box_loss, *, box_outputs=None, cls_outputs=None,
                 cls_grad_l1=None, **ctx):
        if box_outputs is None:
            raise LossInputError("magnitude self-balance needs box_outputs=<box head outputs>")
        if cls_grad_l1 is None:
            if cls_outputs is None:
                raise LossInputError(
                    "magnitude self-balance needs cls_grad_l1=... or cls_outputs=<cls outputs>")
            cls_grad_l1 = _grad_l1(cls_loss, cls_outputs)
        box_norm = _grad_l1(box_loss, box_outputs)
        num = torch.as_tensor(cls_grad_l1, device=box_loss.device).detach().to(box_loss.dtype)
        return num / box_norm.clamp(min=self.eps).to(box_loss.dtype)


class ALRPSelfBalance(TaskBalancer):
    """aLRP Loss epoch-based self-balance (aLRP paper, NeurIPS 2020; RS supplementary S2.2).

    total = L_cls + w * L_loc.  ``w`` starts at ``init_weight`` (50).  Each call records the
    un-weighted values; after ``period`` recorded iterations (about one epoch: 3665 at batch 32 in
    the aLRP repo, 7330 at batch 16 in the RS repo) w becomes (mean L_loc + mean L_cls) / mean L_loc
    over that period and the history restarts.  As in the official head the update happens
    BEFORE the weight is returned, so the iteration that completes a period already uses the new
    weight.  Call it only on iterations that have positives (the official heads skip the others).
    A mean L_loc of 0 is floored at ``eps`` (the official code would divide by zero).

    State for checkpoints: ``state_dict()`` -> {"weight", "count", "cls_sum", "loc_sum",
    "period"}; sums replace the official histories (same means).
    """

    kind = "alrp"

    def __init__(self, init_weight: float = 50.0, period: int = 7330, eps: float = 1e-12) -> None:
        if int(period) < 1:
            raise ConfigError(f"ALRPSelfBalance: period must be >= 1 iteration, got {period!r}")
        self.weight = float(init_weight)
        self.period = int(period)
        self.eps = float(eps)
        self.count = 0
        self.cls_sum = 0.0
        self.loc_sum = 0.0

    def update(self, cls_value, loc_value) -> float:
        """Record one iteration's un-weighted values; returns the weight to use for it."""
        self.cls_sum += float(cls_value)
        self.loc_sum += float(loc_value)
        self.count += 1
        if self.count >= self.period:
            mean_loc = max(self.loc_sum / self.count, self.eps)
            self.weight = (mean_loc + self.cls_sum / self.count) / mean_loc
            self.count, self.cls_sum, self.loc_sum = 0, 0.0, 0.0
        return self.weight

    def __call__(self, cls_loss, box_loss, **ctx):
        # .item()-free would need device-side state; one sync per iteration is what the
        # official code does too and keeps the state a plain, checkpointable float.
        return _detached_scalar(self.update(cls_loss.detach(), box_loss.detach()), box_loss)

    def state_dict(self) -> dict:
        return {"weight": self.weight, "count": self.count, "cls_sum": self.cls_sum,
                "loc_sum": self.loc_sum, "period": self.period}

    def load_state_dict(self, state: dict) -> None:
        missing = {"weight", "count", "cls_sum", "loc_sum"} - set(state)
        if missing:
            raise ConfigError(f"ALRPSelfBalance.load_state_dict: checkpoint lacks {sorted(missing)}")
        self.weight = float(state["weight"])
        self.count = int(state["count"])
        self.cls_sum = float(state["cls_sum"])
        self.loc_sum = float(state["loc_sum"])
        self.period = int(state.get("period", self.period))


def build_task_balancer(kind: str, **kwargs: Any) -> TaskBalancer:
    """Balancer by name (config group ``balance``): constant(value=1.0) | value(eps) |
    magnitude(eps) | alrp(init_weight=50.0, period=7330)."""
    classes = {"constant": ConstantBalance, "value": ValueSelfBalance,
               "magnitude": MagnitudeSelfBalance, "alrp": ALRPSelfBalance}
    if kind not in classes:
        raise ConfigError(f"unknown task balance {kind!r}; choose one of {BALANCE_KINDS}")
    try:
        return classes[kind](**kwargs)
    except TypeError as err:
        raise ConfigError(f"balance={kind}: bad options {kwargs}: {err}") from None
