"""Instance samplers: ``none`` (every non-ignored instance) and ``random`` (fixed budget per image).

Supplementary S3.5 / Tables S7-S8 study exactly this axis: the standard R-CNN recipe samples 256
anchors at 1:1 for the RPN and 512 RoIs at 1:3 for the R-CNN; RS Loss removes both samplers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rsdet.errors import ConfigError

SAMPLERS = ("none", "random")


def sample_instances(
    gt_classes: Tensor,
    image_index: Tensor,
    num_images: int,
    kind: str,
    batch_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Return the indices of the instances that enter the loss.

    ``gt_classes`` >= 0 marks positives, -1 negatives, -2 ignored instances (never returned).
    ``random`` draws up to ``batch_per_image * positive_fraction`` positives per image and fills the
    rest of the budget with negatives (so the realised ratio can be far from the desired one when
    positives are scarce, as Table S7 shows).
    """
    valid = gt_classes >= -1
    if kind == "none":
        return torch.nonzero(valid).flatten()
    if kind != "random":
        raise ConfigError(f"sampler {kind!r} is not one of {SAMPLERS}")
    keep = []
    for img in range(num_images):
        in_img = image_index == img
        pos = torch.nonzero(in_img & (gt_classes >= 0)).flatten()
        neg = torch.nonzero(in_img & (gt_classes == -1)).flatten()
        num_pos = min(int(batch_per_image * positive_fraction), pos.numel())
        num_neg = min(batch_per_image - num_pos, neg.numel())
        pos = pos[torch.randperm(pos.numel(), device=pos.device, generator=generator)[:num_pos]]
        neg = neg[torch.randperm(neg.numel(), device=neg.device, generator=generator)[:num_neg]]
        keep.extend([pos, neg])
    return torch.cat(keep).sort().values if keep else gt_classes.new_zeros(0)


def resolve_stage_sampler(sampler_cfg: Any, loss_cfg: Any, stage: str) -> dict:
    """Sampler settings of one stage: ``sampler.<stage>`` (``auto`` = the loss recipe's
    ``default_sampler.<stage>``, ``none`` when the recipe names none) and its budget
    ``sampler.budget.<stage>`` (conf/sampler/auto.yaml holds the standard budgets)."""
    kind = sampler_cfg.get(stage) or "auto"
    if kind == "auto":
        kind = (loss_cfg.get("default_sampler") or {}).get(stage) or "none"
    if kind not in SAMPLERS:
        raise ConfigError(f"sampler.{stage}={kind!r} is not one of {SAMPLERS + ('auto',)}")
    if kind == "none":
        return {"kind": "none"}
    budget = (sampler_cfg.get("budget") or {}).get(stage)
    if not budget or budget.get("batch_per_image") is None or budget.get("positive_fraction") is None:
        raise ConfigError(
            f"sampler.{stage}={kind} needs a budget: set sampler.budget.{stage}.batch_per_image and "
            f"sampler.budget.{stage}.positive_fraction (e.g. +sampler.budget.{stage}="
            "'{batch_per_image: 256, positive_fraction: 0.5}')")
    return {"kind": kind, "batch_per_image": int(budget["batch_per_image"]),
            "positive_fraction": float(budget["positive_fraction"])}
