"""Score-based classification losses: sigmoid focal loss, binary and softmax cross-entropy.

These are the baselines of the paper's comparisons (supplementary Tables S7/S8).  The sigmoid
losses take targets in the same convention as the ranking losses, so a detector can switch loss
without rebuilding targets: ``1`` positive (values in (0, 1] are used as soft targets), ``0``
negative, ``< 0`` ignored (zero loss and gradient).

Reductions: ``"none"`` (per entry, ignored entries 0), ``"sum"``, ``"mean"`` (over non-ignored
entries) and ``"pos_mean"`` (sum divided by max(1, number of entries with target > 0) — the
RetinaNet normalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision

from rsdet.losses._checks import LossInputError, check_pair, check_reduction

__all__ = ["sigmoid_focal_loss", "binary_cross_entropy", "softmax_cross_entropy"]

_REDUCTIONS = ("none", "sum", "mean", "pos_mean")


def _reduce(loss: torch.Tensor, valid: torch.Tensor, targets: torch.Tensor, reduction: str):
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    count = valid.sum() if reduction == "mean" else (targets > 0).sum()
    return total / count.clamp(min=1).to(total.dtype)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "pos_mean") -> torch.Tensor:
    """Sigmoid focal loss (Lin et al., ICCV 2017) via ``torchvision.ops.sigmoid_focal_loss``.

    FL = -alpha_t (1 - p_t)^gamma log(p_t) per entry, p = sigmoid(logit).

    Args:
        logits: raw scores, any shape.
        targets: same shape; 1 / 0 (soft values allowed), < 0 ignored.
        alpha: weight of positives in (0, 1), or < 0 to disable (torchvision convention).
        gamma: focusing parameter >= 0.
        reduction: "none" | "sum" | "mean" | "pos_mean" (default: RetinaNet normalisation).
    """
    check_pair("sigmoid_focal_loss", logits, targets)
    check_reduction("sigmoid_focal_loss", reduction, _REDUCTIONS)
    valid = targets >= 0
    clean = torch.where(valid, targets, torch.zeros_like(targets)).to(logits.dtype)
    loss = torchvision.ops.sigmoid_focal_loss(logits, clean, alpha=alpha, gamma=gamma,
                                              reduction="none")
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return _reduce(loss, valid, targets, reduction)


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                         pos_weight: float | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits (per-entry sigmoid), ``torch.nn.functional`` based.

    torchvision has no BCE op; ``binary_cross_entropy_with_logits`` is the numerically stable
    form.  Args as :func:`sigmoid_focal_loss`; ``pos_weight`` multiplies the positive term.
    """
    check_pair("binary_cross_entropy", logits, targets)
    check_reduction("binary_cross_entropy", reduction, _REDUCTIONS)
    valid = targets >= 0
    clean = torch.where(valid, targets, torch.zeros_like(targets)).to(logits.dtype)
    weight_pos = None if pos_weight is None else logits.new_tensor(float(pos_weight))
    loss = F.binary_cross_entropy_with_logits(logits, clean, weight=valid.to(logits.dtype),
                                              pos_weight=weight_pos, reduction="none")
    return _reduce(loss, valid, targets, reduction)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean",
                          ignore_index: int = -1, label_smoothing: float = 0.0) -> torch.Tensor:
    """Softmax cross-entropy over K classes (background included as a class), ``F.cross_entropy``.

    The standard R-CNN classifier loss: one softmax over C + 1 logits per row, unlike the
    class-wise sigmoid of the ranking losses.

    Args:
        logits: (M, K) raw scores.
        labels: (M,) int64 class indices in [0, K), or ``ignore_index`` for ignored rows.
        reduction: "none" (per row, ignored rows 0) | "sum" | "mean" (over non-ignored rows).
        ignore_index: label value of ignored rows.
        label_smoothing: as in ``F.cross_entropy``.
    """
    check_reduction("softmax_cross_entropy", reduction, ("none", "sum", "mean"))
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise LossInputError(
            f"softmax_cross_entropy: expected logits (M, K) and labels (M,), got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise LossInputError(
            f"softmax_cross_entropy: labels must be integer class indices, got {labels.dtype}")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0 if reduction != "none" else logits.new_zeros(0)
    return F.cross_entropy(logits, labels.long(), reduction=reduction, ignore_index=ignore_index,
                           label_smoothing=label_smoothing)
