"""Instance samplers: ``none`` (every non-ignored instance), ``random`` (fixed budget per image) and
``ohem`` (every positive plus the highest-loss negatives, docs/samplers.md).

Supplementary S3.5 / Tables S7-S8 study exactly this axis: the standard R-CNN recipe samples 256
anchors at 1:1 for the RPN and 512 RoIs at 1:3 for the R-CNN; the standard YOLACT keeps the hardest
negatives at 3:1 negatives:positives (online hard example mining); RS Loss removes every sampler.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rsdet.errors import ConfigError
from rsdet.models.stage import StageOutput

SAMPLERS = ("none", "random", "ohem")


def sample_instances(
    gt_classes: Tensor,
    image_index: Tensor,
    num_images: int,
    kind: str,
    batch_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
    neg_pos_ratio: float = 3.0,
    losses: Tensor | None = None,
) -> Tensor:
    """Return the indices of the instances that enter the loss.

    ``gt_classes`` >= 0 marks positives, -1 negatives, -2 ignored instances (never returned).
    ``random`` draws up to ``batch_per_image * positive_fraction`` positives per image and fills the
    rest of the budget with negatives (so the realised ratio can be far from the desired one when
    positives are scarce, as Table S7 shows). ``ohem`` keeps every positive of an image and its
    ``floor(neg_pos_ratio * P)`` negatives of highest ``losses`` (per-row classification losses of
    the current predictions, e.g. :func:`ohem_row_losses`); ties go to the lower row index, an
    image without positives contributes no negatives (as YOLACT's OHEM).
    """
    valid = gt_classes >= -1
    if kind == "none":
        return torch.nonzero(valid).flatten()
    if kind == "ohem":
        return _hard_negatives(gt_classes, image_index, num_images, neg_pos_ratio, losses)
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


def _hard_negatives(gt_classes: Tensor, image_index: Tensor, num_images: int, neg_pos_ratio: float,
                    losses: Tensor | None) -> Tensor:
    if losses is None:
        raise ConfigError("sampler ohem picks negatives by their loss, which this stage does not compute before "
                          "sampling; ohem works on one-stage heads (sampler.head=ohem), use none or random here")
    if losses.shape != gt_classes.shape:
        raise ConfigError(f"sampler ohem: {tuple(losses.shape)} losses for {tuple(gt_classes.shape)} rows")
    losses = losses.detach()
    keep = []
    for img in range(num_images):
        in_img = image_index == img
        pos = torch.nonzero(in_img & (gt_classes >= 0)).flatten()
        neg = torch.nonzero(in_img & (gt_classes == -1)).flatten()
        num_neg = min(int(neg_pos_ratio * pos.numel()), neg.numel())
        # stable descending sort: equal losses keep ascending row order, so ties go to the lower row
        order = torch.sort(losses[neg], descending=True, stable=True).indices[:num_neg]
        keep.extend([pos, neg[order]])
    return torch.cat(keep).sort().values if keep else gt_classes.new_zeros(0)


def ohem_row_losses(cls_logits: Tensor, gt_classes: Tensor, softmax: bool) -> Tensor:
    """Per-row classification loss that OHEM ranks negatives by (detached, (M,)).

    ``softmax``: cross-entropy over C + 1 logits with the background last (YOLACT's classifier);
    otherwise binary cross-entropy summed over C class-wise sigmoid logits. Rows with
    ``gt_classes`` < 0 count as background."""
    with torch.no_grad():
        logits = cls_logits.detach().float()
        if softmax:
            background = logits.shape[1] - 1
            target = torch.where(gt_classes >= 0, gt_classes, torch.full_like(gt_classes, background))
            return F.cross_entropy(logits, target, reduction="none")
        target = torch.zeros_like(logits)
        pos = torch.nonzero(gt_classes >= 0).flatten()
        target[pos, gt_classes[pos]] = 1.0
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)


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
    if kind == "ohem":
        ratio = (budget or {}).get("neg_pos_ratio")
        if ratio is None or float(ratio) < 0:
            raise ConfigError(
                f"sampler.{stage}=ohem needs sampler.budget.{stage}.neg_pos_ratio >= 0 (negatives kept per "
                f"positive; the standard YOLACT uses 3), got {ratio!r}")
        return {"kind": "ohem", "neg_pos_ratio": float(ratio)}
    if not budget or budget.get("batch_per_image") is None or budget.get("positive_fraction") is None:
        raise ConfigError(
            f"sampler.{stage}={kind} needs a budget: set sampler.budget.{stage}.batch_per_image and "
            f"sampler.budget.{stage}.positive_fraction (e.g. +sampler.budget.{stage}="
            "'{batch_per_image: 256, positive_fraction: 0.5}')")
    return {"kind": kind, "batch_per_image": int(budget["batch_per_image"]),
            "positive_fraction": float(budget["positive_fraction"])}


def sample_stage(out: StageOutput, sampler: dict, num_images: int, softmax: bool = False,
                 row_losses: bool = True) -> StageOutput:
    """``out`` restricted to the rows its stage's sampler keeps (``sampler``: from
    :func:`resolve_stage_sampler`; ``none`` returns ``out`` itself). OHEM ranks the negatives by
    :func:`ohem_row_losses` of the stage's logits (``softmax``: a classifier with the background
    last); a stage that samples before it predicts passes ``row_losses=False``, and OHEM there is
    then a configuration error."""
    if sampler["kind"] == "none":
        return out
    losses = (ohem_row_losses(out.cls_logits, out.gt_classes, softmax=softmax)
              if row_losses and sampler["kind"] == "ohem" else None)
    return out.select(sample_instances(out.gt_classes, out.image_index, num_images, **sampler, losses=losses))
