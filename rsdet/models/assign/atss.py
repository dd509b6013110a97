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

__all__ = ["AssignerInputError", "anchor_centers", "pairwise_iou", "atss_assign", "atss_assign_images",
           "atss_assign_boxes", "atss_assign_boxes_images", "matched_boxes"]

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


def _iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of broadcastable (..., 4) xyxy boxes; the union is clamped to ``eps`` (no NaN)."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]).clamp(min=0) * (
        boxes1[..., 3] - boxes1[..., 1]).clamp(min=0)
    area2 = (boxes2[..., 2] - boxes2[..., 0]).clamp(min=0) * (
        boxes2[..., 3] - boxes2[..., 1]).clamp(min=0)
    wh = (torch.min(boxes1[..., 2:], boxes2[..., 2:])
          - torch.max(boxes1[..., :2], boxes2[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1 + area2 - inter).clamp(min=eps)


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of every box in ``boxes1`` (N, 4) with every box in ``boxes2`` (M, 4): an (N, M) tensor.

    The union is clamped to ``eps`` so that degenerate (zero-area) boxes give 0, not NaN.
    """
    return _iou(boxes1[:, None, :], boxes2[None, :, :], eps)


def _nearest_k_indices(distances: Tensor, k: int) -> Tensor:
    """Column indices of the ``k`` smallest entries of each row of ``distances`` (G, n), k <= n.

    Equal distances are broken towards the lower column (anchor) index, so the choice does not
    depend on the device's top-k implementation. Returns (G, k), ascending within each row.
    """
    kth = distances.topk(k, dim=1, largest=False).values[:, -1:]  # the k-th smallest value
    below = distances < kth
    at = distances == kth
    still_needed = k - below.sum(dim=1, keepdim=True)  # >= 1 per row
    chosen = below | (at & (at.cumsum(dim=1) <= still_needed))
    return chosen.nonzero()[:, 1].view(distances.shape[0], k)


def _candidate_statistics(anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
                          topk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The pieces of the ATSS rule for each box (G >= 1) and its K candidates.

    Returns ``(candidates (G, K) anchor indices, ious (G, K), threshold (G,), inside (G, K))``,
    K = sum over levels of min(topk, level size); computed in float32 (float64 when the anchors
    are float64).
    """
    dtype = torch.float64 if anchors.dtype == torch.float64 else torch.float32
    anchors = anchors.to(dtype)
    gt_boxes = gt_boxes.to(device=anchors.device, dtype=dtype)
    a_ctr = anchor_centers(anchors)
    g_ctr = anchor_centers(gt_boxes)
    distances = (g_ctr[:, None, :] - a_ctr[None, :, :]).pow(2).sum(-1).sqrt()  # (G, A)

    parts, start = [], 0
    for count in num_anchors_per_level:
        count = int(count)
        if count > 0:
            k = min(int(topk), count)
            parts.append(_nearest_k_indices(distances[:, start:start + count], k) + start)
        start += count
    candidates = torch.cat(parts, dim=1)  # (G, K)

    ious = _iou(anchors[candidates], gt_boxes[:, None, :])  # (G, K)
    # mean + unbiased std of the candidates' IoUs; a single candidate gets std 0
    mean = ious.mean(dim=1)
    std = ious.std(dim=1) if ious.shape[1] > 1 else torch.zeros_like(mean)
    threshold = mean + std

    # centre strictly inside the box: distance to each side > CENTER_MARGIN
    ctr = a_ctr[candidates]  # (G, K, 2)
    box = gt_boxes[:, None, :]
    side_gaps = torch.stack((ctr[..., 0] - box[..., 0], ctr[..., 1] - box[..., 1],
                             box[..., 2] - ctr[..., 0], box[..., 3] - ctr[..., 1]), dim=-1)
    inside = side_gaps.min(dim=-1).values > CENTER_MARGIN
    return candidates, ious, threshold, inside


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
    return atss_assign_images(anchors, num_anchors_per_level, gt_boxes, gt_labels, [int(gt_boxes.shape[0])]
                              if gt_boxes.dim() == 2 else [0], topk)


def atss_assign_images(anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
                       gt_labels: Tensor, counts: Sequence[int], topk: int = 9) -> tuple[Tensor, Tensor]:
    """:func:`atss_assign` of a batch of images that share ``anchors`` (A, 4) (one padded input size),
    in one pass: ``gt_boxes`` (G, 4) and ``gt_labels`` (G,) hold the images' boxes one image after the
    other, ``counts[b]`` of them for image b. Returns ``(gt_classes, matched_gt)``, both (B·A,), image
    after image: per image what :func:`atss_assign` returns, with ``matched_gt`` indexing the batch's
    ``gt_boxes``. Every box's candidates, statistics and threshold are computed on its own row, and an
    anchor only competes among the boxes of its own image (docs/performance.md)."""
    _check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_labels, topk)
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != gt_boxes.shape[0]:
        raise AssignerInputError(
            f"atss_assign_images: counts {counts} must be one non-negative box count per image summing to the "
            f"{gt_boxes.shape[0]} boxes")
    num_anchors, num_gts = anchors.shape[0], gt_boxes.shape[0]
    device = anchors.device
    matched_gt = torch.full((len(counts) * num_anchors,), -1, dtype=torch.long, device=device)
    if num_gts == 0 or num_anchors == 0:
        return matched_gt.clone(), matched_gt

    with torch.no_grad():
        candidates, ious, threshold, inside = _candidate_statistics(
            anchors, num_anchors_per_level, gt_boxes, topk)
        positive = (ious >= threshold[:, None]) & inside  # (G, K)
        if len(counts) > 1:  # row of each (box, candidate) in the batch: its image's block of anchors
            image_of_gt = torch.repeat_interleave(torch.arange(len(counts), device=device),
                                                  torch.tensor(counts, device=device))
            candidates = candidates + image_of_gt[:, None] * num_anchors
        pos_gt = torch.arange(num_gts, device=device)[:, None].expand_as(candidates)[positive]
        pos_anchor = candidates[positive]
        pos_iou = ious[positive]
        # per anchor: the highest IoU among its boxes, then the lowest box index reaching it
        best_iou = torch.full(matched_gt.shape, float("-inf"), dtype=ious.dtype, device=device)
        best_iou = best_iou.scatter_reduce(0, pos_anchor, pos_iou, reduce="amax")
        at_best = pos_iou == best_iou[pos_anchor]
        best_gt = torch.full(matched_gt.shape, num_gts, dtype=torch.long, device=device)
        best_gt = best_gt.scatter_reduce(0, pos_anchor[at_best], pos_gt[at_best], reduce="amin")
        is_pos = best_gt < num_gts
        matched_gt = torch.where(is_pos, best_gt, matched_gt)
        labels = gt_labels.to(device=device, dtype=torch.long)
        gt_classes = torch.where(is_pos, labels[best_gt.clamp(max=num_gts - 1)],
                                 torch.full_like(matched_gt, -1))
    return gt_classes, matched_gt


def atss_assign_boxes(anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor, gt_labels: Tensor,
                      topk: int = 9) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`atss_assign` in the form of ``max_iou_assign``: ``(classes, matched GT box, matched GT
    index)`` per anchor; the boxes of negatives are those of GT 0 (zeros in an image without objects)."""
    classes, index = atss_assign(anchors, num_anchors_per_level, gt_boxes, gt_labels, topk)
    boxes = gt_boxes[index.clamp(min=0)] if gt_boxes.numel() else torch.zeros_like(anchors)
    return classes, boxes, index


def atss_assign_boxes_images(anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Sequence[Tensor],
                             gt_labels: Sequence[Tensor], topk: int = 9) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`atss_assign_boxes` of every image of a batch at once (:func:`atss_assign_images`), one
    (n_b, 4) box and (n_b,) label tensor per image: ``(classes, matched GT box, matched GT index)``
    (B·A,) image after image, the index into the images' boxes concatenated."""
    counts = [len(b) for b in gt_boxes]
    boxes = torch.cat(list(gt_boxes)) if counts else anchors.new_zeros((0, 4))
    labels = torch.cat(list(gt_labels)) if counts else torch.zeros(0, dtype=torch.long, device=anchors.device)
    classes, index = atss_assign_images(anchors, num_anchors_per_level, boxes, labels, counts, topk)
    return classes, matched_boxes(boxes, index, counts, anchors.shape[0]), index


def matched_boxes(gt_boxes: Tensor, index: Tensor, counts: Sequence[int], num_anchors: int) -> Tensor:
    """(B·A, 4) matched boxes of an assignment of B images (``index`` (B·A,) into ``gt_boxes``, -1 for
    negatives): a negative gets its own image's first box, zeros in an image without boxes (the
    single-image assigners' convention)."""
    first, offset = [], 0
    for c in counts:
        first.append(offset if c else len(gt_boxes))
        offset += c
    default = torch.tensor(first, dtype=torch.long, device=index.device).repeat_interleave(num_anchors)
    padded = torch.cat([gt_boxes, gt_boxes.new_zeros((1, 4))])
    return padded[torch.where(index >= 0, index, default)]
