"""Fast NMS (YOLACT, Bolya et al., ICCV 2019, §3.4): class-wise NMS as one matrix operation.

For each class the ``top_k`` highest-scoring boxes are sorted, their IoU matrix is kept above the
diagonal (IoU with every *higher*-scored box of the class) and a box survives when its largest such
IoU is at most the threshold. Unlike standard NMS a box already suppressed still suppresses lower
ones, so Fast NMS removes slightly more boxes (docs/detectors.md, "YOLACT").
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

__all__ = ["fast_nms", "standard_nms"]


def fast_nms(boxes: Tensor, scores: Tensor, iou_thresh: float = 0.5, score_thresh: float = 0.05,
             top_k: int = 200, max_dets: int = 100) -> tuple[Tensor, Tensor, Tensor]:
    """Class-wise Fast NMS on class-agnostic boxes.

    Args:
        boxes: (N, 4) boxes shared by every class.
        scores: (N, C) class scores.
    Returns:
        ``(rows, labels, scores)`` of the kept detections, best first, at most ``max_dets``: the box
        row of each, its class and its score (> ``score_thresh``).
    """
    n, c = scores.shape
    if n == 0 or c == 0:
        empty = torch.zeros(0, dtype=torch.long, device=scores.device)
        return empty, empty, scores.new_zeros(0)
    k = min(int(top_k), n)
    top, idx = scores.t().sort(dim=1, descending=True)  # (C, N)
    top, idx = top[:, :k], idx[:, :k]
    b = boxes[idx]  # (C, k, 4)
    iou = torch.stack([box_iou(b[i], b[i]) for i in range(c)]) if c else b.new_zeros(0, k, k)
    iou = iou.triu(diagonal=1)
    worst = iou.max(dim=1).values  # (C, k): largest IoU with a higher-scored box of the class
    keep = (worst <= iou_thresh) & (top > score_thresh)
    labels = torch.arange(c, device=scores.device)[:, None].expand(c, k)[keep]
    rows, kept_scores = idx[keep], top[keep]
    order = kept_scores.sort(descending=True).indices[: int(max_dets)]
    return rows[order], labels[order], kept_scores[order]


def standard_nms(boxes: Tensor, scores: Tensor, iou_thresh: float = 0.5, score_thresh: float = 0.05,
                 top_k: int = 200, max_dets: int = 100) -> tuple[Tensor, Tensor, Tensor]:
    """The same interface with torchvision's greedy class-wise NMS (``detector.test.nms=standard``);
    ``top_k`` candidates per class, as in :func:`fast_nms`."""
    n, c = scores.shape
    k = min(int(top_k), n)
    if k == 0 or c == 0:
        empty = torch.zeros(0, dtype=torch.long, device=scores.device)
        return empty, empty, scores.new_zeros(0)
    top, idx = scores.t().sort(dim=1, descending=True)
    top, idx = top[:, :k].reshape(-1), idx[:, :k].reshape(-1)
    labels = torch.arange(c, device=scores.device).repeat_interleave(k)
    ok = top > score_thresh
    top, idx, labels = top[ok], idx[ok], labels[ok]
    keep = batched_nms(boxes[idx], top, labels, iou_thresh)[: int(max_dets)]
    return idx[keep], labels[keep], top[keep]
