"""Box and mask regression losses: GIoU, L1, smooth L1 and Dice.

Box losses take paired boxes ``pred[i]`` / ``target[i]``.  GIoU returns one value per box with
``reduction="none"``; L1 and smooth L1 return per-coordinate values with ``"none"`` (as
``torch.nn.functional``) and per-box sums over the 4 coordinates with ``"box"``.  Per-box values
can be weighted per instance (supplementary Eq. S18, :func:`rsdet.losses.weighting.weighted_mean`).
``"sum"`` is the total; ``"mean"`` is the total divided by the number of boxes (mmdet's
normalisation by the number of positives), for every box loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision

from rsdet.losses._checks import LossInputError, check_reduction

__all__ = ["giou_loss", "l1_loss", "smooth_l1_loss", "dice_coefficient", "dice_loss"]

_REDUCTIONS = ("none", "sum", "mean")
_COORD_REDUCTIONS = ("none", "box", "sum", "mean")


def _check_boxes(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() < 1 or pred.shape[-1] != 4:
        raise LossInputError(
            f"{name}: expected pred and target of equal shape (..., 4), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}")


def _reduce(loss: torch.Tensor, reduction: str, per_coordinate: bool = False) -> torch.Tensor:
    """``loss`` is per box, or per coordinate (..., 4) when ``per_coordinate``."""
    if reduction == "none":
        return loss
    per_box = loss.sum(-1) if per_coordinate else loss
    if reduction == "box":
        return per_box
    if reduction == "sum":
        return per_box.sum()
    # mean over boxes; an empty set gives a 0 that still carries a graph (no NaN without boxes)
    return per_box.sum() / max(per_box.numel(), 1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "none",
              eps: float = 1e-7) -> torch.Tensor:
    """Generalized IoU loss 1 - GIoU (Rezatofighi et al., CVPR 2019), range [0, 2].

    Wraps ``torchvision.ops.generalized_box_iou_loss``; boxes are (x1, y1, x2, y2) on decoded
    coordinates.  Used by every RS detector (supplementary S2.1) and as aLRP's E_loc (Eq. S20).
    """
    _check_boxes("giou_loss", pred, target)
    check_reduction("giou_loss", reduction, _REDUCTIONS)
    if pred.numel() == 0:
        return _reduce(pred.sum(-1) * 0.0, reduction)
    loss = torchvision.ops.generalized_box_iou_loss(pred, target, reduction="none", eps=eps)
    return _reduce(loss, reduction)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """L1 loss |pred_c - target_c| (e.g. on encoded deltas).

    reduction: "none" (..., 4) per coordinate | "box" (...,) summed over coordinates |
    "sum" | "mean" (sum / number of boxes).
    """
    _check_boxes("l1_loss", pred, target)
    check_reduction("l1_loss", reduction, _COORD_REDUCTIONS)
    return _reduce((pred - target).abs(), reduction, per_coordinate=True)


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0,
                   reduction: str = "none") -> torch.Tensor:
    """Smooth L1 (Fast R-CNN): 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta (beta 0: L1).

    reduction: "none" (..., 4) per coordinate | "box" (...,) summed over coordinates |
    "sum" | "mean" (sum / number of boxes).
    """
    _check_boxes("smooth_l1_loss", pred, target)
    check_reduction("smooth_l1_loss", reduction, _COORD_REDUCTIONS)
    if beta < 0:
        raise LossInputError(f"smooth_l1_loss: beta must be >= 0, got {beta!r}")
    per_coord = F.smooth_l1_loss(pred, target, beta=beta, reduction="none")
    return _reduce(per_coord, reduction, per_coordinate=True)


def dice_coefficient(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-instance Dice coefficient with squared denominators: 2 sum(p t) / (sum p^2 + sum t^2 + eps).

    Args:
        pred: (P, ...) mask probabilities (clamped to [0, 1], as in RS-YOLACT).
        target: same shape, binary masks.
        eps: 1e-5 for YOLACT/Mask R-CNN; SOLOv2 adds 0.001 to each squared sum, i.e.
            ``eps=0.002`` (the official configurations; docs/losses.md).

    Returns:
        (P,) Dice coefficients (differentiable w.r.t. ``pred``).
    """
    if pred.shape != target.shape or pred.dim() < 1:
        raise LossInputError(
            f"dice_coefficient: pred {tuple(pred.shape)} and target {tuple(target.shape)} must "
            "have the same shape (P, ...)")
    p = pred.clamp(0.0, 1.0).flatten(1) if pred.dim() > 1 else pred.clamp(0.0, 1.0)[:, None]
    t = target.to(p.dtype).reshape(p.shape)
    return 2.0 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + eps)


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-5,
              reduction: str = "none") -> torch.Tensor:
    """1 - :func:`dice_coefficient` per instance (RS mask loss; supplementary S3.4)."""
    check_reduction("dice_loss", reduction, _REDUCTIONS)
    return _reduce(1.0 - dice_coefficient(pred, target, eps), reduction)
