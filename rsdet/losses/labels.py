"""Continuous labels for RS Loss (supplementary Table S6) and the flat target vector (docs/losses.md).

RS Loss ranks positives by a continuous label y in (0, 1]: the IoU of the (detached, decoded)
predicted box with its ground truth for detectors, Dice for SOLOv2; Table S6 compares binary,
IoU, Dice and (IoU + Dice)/2 on RS-YOLACT.
"""

from __future__ import annotations

import torch

from rsdet.errors import ConfigError
from rsdet.losses._checks import LossInputError
from rsdet.losses.box import dice_coefficient

__all__ = ["box_iou_aligned", "continuous_labels", "vectorise_targets", "LABEL_KINDS"]

LABEL_KINDS = ("binary", "iou", "dice", "mean")
_ALIASES = {"iou_dice": "mean", "iou+dice": "mean"}


def box_iou_aligned(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Elementwise IoU of paired boxes ``pred[i]`` / ``gt[i]`` (x1, y1, x2, y2) -> (P,).

    Differentiable; callers that use it as a label or weight detach it (as ``continuous_labels``
    does).  The union is floored at ``eps`` (degenerate boxes give 0, not NaN).
    """
    if pred.shape != gt.shape or pred.dim() != 2 or pred.shape[-1] != 4:
        raise LossInputError(
            f"box_iou_aligned: expected two (P, 4) tensors, got {tuple(pred.shape)} and "
            f"{tuple(gt.shape)}")
    lt = torch.maximum(pred[:, :2], gt[:, :2])
    rb = torch.minimum(pred[:, 2:], gt[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(1)
    area_g = (gt[:, 2:] - gt[:, :2]).clamp(min=0).prod(1)
    return inter / (area_p + area_g - inter).clamp(min=eps)


def _count(*tensors) -> tuple[int, torch.device]:
    for t in tensors:
        if t is not None:
            return t.shape[0], t.device
    raise LossInputError("continuous_labels('binary'): pass num=P or any per-positive tensor")


def continuous_labels(kind: str, *, pred_boxes: torch.Tensor | None = None,
                      gt_boxes: torch.Tensor | None = None, pred_masks: torch.Tensor | None = None,
                      gt_masks: torch.Tensor | None = None, num: int | None = None,
                      min_value: float = 0.0, dice_eps: float = 1e-5) -> torch.Tensor:
    """Per-positive continuous label in [0, 1], detached (supplementary Table S6).

    Args:
        kind: "binary" (all 1: ranking only, the sorting loss vanishes), "iou" (box IoU of the
            decoded prediction with its GT), "dice" (mask Dice coefficient), "mean"
            ((IoU + Dice) / 2; alias "iou_dice").
        pred_boxes, gt_boxes: (P, 4) for "iou"/"mean".
        pred_masks, gt_masks: (P, H, W) probabilities / binary masks for "dice"/"mean".
        num: P for "binary" when no tensor is given.
        min_value: labels are clamped to >= this.  0 (default) is the official behaviour: a
            positive with label exactly 0 becomes a *negative* entry of RS Loss (docs/losses.md);
            a tiny value such as 1e-6 keeps it positive.
        dice_eps: eps of :func:`rsdet.losses.box.dice_coefficient`.

    Returns:
        (P,) float tensor without gradient.
    """
    kind = _ALIASES.get(kind, kind)
    if kind not in LABEL_KINDS:
        raise ConfigError(f"unknown continuous label kind {kind!r}; choose one of {LABEL_KINDS}")
    with torch.no_grad():
        if kind == "binary":
            if num is not None:
                device = next((t.device for t in (pred_boxes, gt_boxes, pred_masks, gt_masks)
                               if t is not None), torch.device("cpu"))
                return torch.ones(int(num), device=device)
            n, device = _count(pred_boxes, gt_boxes, pred_masks, gt_masks)
            return torch.ones(n, device=device)
        parts = []
        if kind in ("iou", "mean"):
            if pred_boxes is None or gt_boxes is None:
                raise LossInputError(f"continuous_labels({kind!r}) needs pred_boxes and gt_boxes")
            parts.append(box_iou_aligned(pred_boxes.detach().float(), gt_boxes.detach().float()))
        if kind in ("dice", "mean"):
            if pred_masks is None or gt_masks is None:
                raise LossInputError(f"continuous_labels({kind!r}) needs pred_masks and gt_masks")
            parts.append(dice_coefficient(pred_masks.detach().float(), gt_masks.detach(),
                                          dice_eps))
        labels = parts[0] if len(parts) == 1 else (parts[0] + parts[1]) / 2
        return labels.clamp(min=float(min_value), max=1.0)


def vectorise_targets(labels: torch.Tensor, num_classes: int,
                      label_weights: torch.Tensor | None = None,
                      values: torch.Tensor | None = None) -> torch.Tensor:
    """Build the (M, C) target matrix of the ranking losses from per-row assignments (docs/losses.md).

    Args:
        labels: (M,) int, class index in [0, C) for positive rows, C (= ``num_classes``) for
            background rows.
        num_classes: C (no background logit: class-wise sigmoid).
        label_weights: (M,) optional; rows with weight 0 become -1 (ignored) in every column.
        values: (P,) optional continuous labels of the positive rows in ascending row order
            (written at (row, class) instead of 1).

    Returns:
        (M, C) float32 matrix: 1 / value at (row, class) of positives, 0 elsewhere, -1 on
        ignored rows.  Flatten it together with the (M, C) logits (row-major).
    """
    if labels.dim() != 1:
        raise LossInputError(f"vectorise_targets: labels must be (M,), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise LossInputError(
            f"vectorise_targets: labels must lie in [0, {num_classes}] ({num_classes} = "
            f"background), got range [{int(labels.min())}, {int(labels.max())}]")
    out = torch.zeros(labels.numel(), num_classes, device=labels.device)
    rows = (labels < num_classes).nonzero().squeeze(1)
    fill = torch.ones(rows.numel(), device=labels.device)
    if values is not None:
        if values.numel() != rows.numel():
            raise LossInputError(
                f"vectorise_targets: {values.numel()} values for {rows.numel()} positive rows; "
                "pass one value per positive row in ascending row order")
        fill = values.detach().reshape(-1).to(out)
    out[rows, labels[rows].long()] = fill
    if label_weights is not None:
        out[label_weights.reshape(-1) == 0] = -1.0
    return out
