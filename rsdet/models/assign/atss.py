"""Adaptive Training Sample Selection (ATSS; Zhang et al., CVPR 2020, Alg. 1).

Per ground-truth box: on every pyramid level take the ``topk`` anchors whose centres are closest
to the box centre; the IoU threshold is the mean plus the (unbiased) standard deviation of those
candidates' IoUs; a candidate is positive when its IoU reaches the threshold and its centre lies
strictly inside the box. An anchor that is positive for several boxes goes to the one it overlaps
most. ATSS has no ignore region. The exact rules, tie breaks and the differences from the paper's
description are in docs/assigners.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rsdet.errors import RsdetError

__all__ = ["AssignerInputError", "anchor_centers", "pairwise_iou", "atss_assign"]

# A candidate's centre must be farther than this (in pixels) from every side of the box.
CENTER_MARGIN = 0.01


class AssignerInputError(RsdetError, ValueError):
    """An assigner received tensors it cannot use (wrong shape, count or value)."""


def anchor_centers(boxes: Tensor) -> Tensor:
    """Centres ``((x1 + x2) / 2, (y1 + y2) / 2)`` of (N, 4) xyxy boxes, as an (N, 2) tensor."""
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise AssignerInputError(
            f"anchor_centers: expected boxes of shape (N, 4) in (x1, y1, x2, y2), got "
            f"{tuple(boxes.shape)}")
    return torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), dim=1)


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of every box in ``boxes1`` (N, 4) with every box in ``boxes2`` (M, 4): an (N, M) tensor.

    The union is clamped to ``eps`` so that degenerate (zero-area) boxes give 0, not NaN.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area1[:, None] + area2[None, :] - inter).clamp(min=eps)
    return inter / union


def _nearest_k_mask(distances: Tensor, k: int) -> Tensor:
    """Mark, in each column of ``distances`` (n, G), the ``k`` smallest entries (k <= n).

    Equal distances are broken towards the lower row (anchor) index, so exactly ``k`` entries
    per column are marked and the result does not depend on the device's top-k implementation.
    """
    kth = distances.kthvalue(k, dim=0).values  # (G,) the k-th smallest distance
    below = distances < kth
    at = distances == kth
    still_needed = k - below.sum(dim=0)  # >= 1 per column
    return below | (at & (at.cumsum(dim=0) <= still_needed))


def _candidate_statistics(anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
                          topk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The pieces of the ATSS rule for every (anchor, box) pair, G >= 1.

    Returns ``(ious (A, G), candidate (A, G) bool, threshold (G,), inside (A, G) bool)``,
    computed in float32 (float64 when the anchors are float64).
    """
    dtype = torch.float64 if anchors.dtype == torch.float64 else torch.float32
    anchors = anchors.to(dtype)
    gt_boxes = gt_boxes.to(device=anchors.device, dtype=dtype)
    ious = pairwise_iou(anchors, gt_boxes)
    a_ctr = anchor_centers(anchors)
    g_ctr = anchor_centers(gt_boxes)
    distances = (a_ctr[:, None, :] - g_ctr[None, :, :]).pow(2).sum(-1).sqrt()

    candidate = torch.zeros_like(ious, dtype=torch.bool)
    start = 0
    for count in num_anchors_per_level:
        count = int(count)
        if count > 0:
            k = min(int(topk), count)
            candidate[start:start + count] = _nearest_k_mask(distances[start:start + count], k)
        start += count

    # mean + unbiased std of the candidate IoUs per box; every box has the same number of
    # candidates (the sum over levels of min(topk, level size)); one candidate: std = 0
    n = candidate.sum(dim=0).to(dtype)
    zeros = torch.zeros_like(ious)
    mean = torch.where(candidate, ious, zeros).sum(dim=0) / n
    sq_dev = torch.where(candidate, (ious - mean).pow(2), zeros)
    std = (sq_dev.sum(dim=0) / (n - 1).clamp(min=1)).sqrt()
    threshold = mean + std

    # centre strictly inside the box: distance to each side > CENTER_MARGIN
    x, y = a_ctr[:, 0:1], a_ctr[:, 1:2]
    side_gaps = torch.stack((x - gt_boxes[:, 0], y - gt_boxes[:, 1],
                             gt_boxes[:, 2] - x, gt_boxes[:, 3] - y), dim=-1)
    inside = side_gaps.min(dim=-1).values > CENTER_MARGIN
    return ious, candidate, threshold, inside


def _check_inputs(anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
                  gt_labels: Tensor, topk: int) -> None:
    if anchors.dim() != 2 or anchors.shape[1] != 4:
        raise AssignerInputError(
            f"atss_assign: anchors must be (A, 4) xyxy, got shape {tuple(anchors.shape)}")
    counts = [int(n) for n in num_anchors_per_level]
    if any(n < 0 for n in counts) or sum(counts) != anchors.shape[0]:
        raise AssignerInputError(
            f"atss_assign: num_anchors_per_level {counts} sums to {sum(counts)} but there are "
            f"{anchors.shape[0]} anchors; pass one non-negative count per level, in the order "
            "the anchors are concatenated")
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise AssignerInputError(
            f"atss_assign: gt_boxes must be (G, 4) xyxy, got shape {tuple(gt_boxes.shape)}")
    if gt_labels.shape != (gt_boxes.shape[0],):
        raise AssignerInputError(
            f"atss_assign: gt_labels must be ({gt_boxes.shape[0]},), one class per box, got "
            f"shape {tuple(gt_labels.shape)}")
    if gt_labels.numel() and int(gt_labels.min()) < 0:
        raise AssignerInputError(
            f"atss_assign: gt_labels must be class indices >= 0, got {gt_labels.tolist()}")
    if int(topk) < 1:
        raise AssignerInputError(f"atss_assign: topk must be >= 1, got {topk!r}")


def atss_assign(anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
                gt_labels: Tensor, topk: int = 9) -> tuple[Tensor, Tensor]:
    """Assign anchors to ground-truth boxes with ATSS (Zhang et al., CVPR 2020).

    Args:
        anchors: (A, 4) xyxy anchors of one image, levels concatenated in order.
        num_anchors_per_level: number of anchors of each level (sums to A).
        gt_boxes: (G, 4) xyxy ground-truth boxes (G may be 0).
        gt_labels: (G,) long class index (>= 0) of each box.
        topk: candidates per level and box, by centre distance (all anchors of a level that has
            fewer).

    Returns:
        ``(gt_classes, matched_gt)``, both (A,) long on the anchors' device: the class of the
        matched box and its index into ``gt_boxes`` for positives, -1 for negatives in both.

    Rules (docs/assigners.md): candidates are the ``topk`` nearest anchor centres (L2) per level,
    equal distances broken towards the lower anchor index. Threshold = mean + unbiased std of the
    candidates' IoUs (std taken as 0 when there is a single candidate). Positive if IoU >=
    threshold and the anchor centre is more than 0.01 px inside every side of the box. An anchor
    positive for several boxes takes the box with the highest IoU; exact IoU ties go to the box
    with the lowest index. No gradient flows through the assignment.
    """
    _check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_labels, topk)
    num_anchors, num_gts = anchors.shape[0], gt_boxes.shape[0]
    device = anchors.device
    matched_gt = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
    if num_gts == 0 or num_anchors == 0:
        return matched_gt.clone(), matched_gt

    with torch.no_grad():
        ious, candidate, threshold, inside = _candidate_statistics(
            anchors, num_anchors_per_level, gt_boxes, topk)
        positive = candidate & (ious >= threshold[None, :]) & inside
        masked = torch.where(positive, ious, torch.full_like(ious, float("-inf")))
        best_gt = masked.argmax(dim=1)  # first maximum: lowest box index on exact ties
        is_pos = positive.any(dim=1)
        matched_gt = torch.where(is_pos, best_gt, matched_gt)
        labels = gt_labels.to(device=device, dtype=torch.long)
        gt_classes = torch.where(is_pos, labels[best_gt], torch.full_like(matched_gt, -1))
    return gt_classes, matched_gt
