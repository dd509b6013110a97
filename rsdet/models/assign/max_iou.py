"""Max-IoU assignment with the minimum-IoU floor on low-quality matches (docs/detectors.md).

torchvision's ``Matcher`` promotes each ground truth's best anchors to positives whatever their IoU;
the RS configurations (and mmdetection's MaxIoUAssigner they use) only do so when that IoU is at
least ``min_pos_iou``. The RPN uses 0.7 / 0.3 with a 0.3 floor, PAA's initial candidates 0.1 / 0.1
with no floor, the R-CNN 0.5 / 0.5 without low-quality matches.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou

from rsdet.models.stage import IGNORED, NEGATIVE


class MinIoUMatcher(det_utils.Matcher):
    """torchvision's Matcher; low-quality matches (if enabled) need IoU >= ``min_pos_iou``."""

    def __init__(self, high: float, low: float, min_pos_iou: float | None = None, low_quality: bool = True):
        super().__init__(high, low, allow_low_quality_matches=low_quality)
        self.min_pos_iou = float(low if min_pos_iou is None else min_pos_iou)

    def set_low_quality_matches_(self, matches: Tensor, all_matches: Tensor, quality: Tensor) -> None:
        best, _ = quality.max(dim=1)
        gt_idx, pred_idx = torch.where((quality == best[:, None]) & (best[:, None] >= self.min_pos_iou))
        matches[pred_idx] = all_matches[pred_idx]


def max_iou_assign(matcher: det_utils.Matcher, boxes: Tensor, gt_boxes: Tensor,
                   gt_labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Label ``boxes`` (A, 4) against one image's ground truth.

    Returns ``(classes, matched_gt_boxes, matched_index)``: the class of the matched ground truth
    (0 for every positive when ``gt_labels`` is None, i.e. objectness), ``NEGATIVE`` below the low
    threshold, ``IGNORED`` in between; the matched boxes (a copy of the first GT for negatives) and
    the matched GT index (-1 for negatives and ignored rows).
    """
    n = len(boxes)
    if gt_boxes.numel() == 0:
        return (torch.full((n,), NEGATIVE, dtype=torch.long, device=boxes.device), torch.zeros_like(boxes),
                torch.full((n,), -1, dtype=torch.long, device=boxes.device))
    matched = matcher(box_iou(gt_boxes, boxes))
    safe = matched.clamp(min=0)
    if gt_labels is None:
        classes = torch.zeros(n, dtype=torch.long, device=boxes.device)
    else:
        classes = gt_labels[safe].clone()
    classes[matched == det_utils.Matcher.BELOW_LOW_THRESHOLD] = NEGATIVE
    classes[matched == det_utils.Matcher.BETWEEN_THRESHOLDS] = IGNORED
    index = torch.where(matched >= 0, matched, torch.full_like(matched, -1))
    return classes, gt_boxes[safe], index


def max_iou_match_images(matcher: det_utils.Matcher, boxes: Tensor, gt_boxes: Tensor, counts: list[int]) -> Tensor:
    """The matched GT index of ``boxes`` (A, 4), the same boxes in every image of a batch, against each
    image's ground truth: ``gt_boxes`` (G, 4) holds the images' boxes one image after the other,
    ``counts[b]`` of them for image b. Returns (len(counts) · A,) indices into ``gt_boxes``, -1 for
    negatives and ignored boxes: per image what ``max_iou_assign`` returns as its third value, shifted
    by the image's offset, with one IoU matrix for the batch."""
    iou = box_iou(gt_boxes, boxes)  # (G, A)
    out, offset = [], 0
    for count in counts:
        if count == 0:
            out.append(torch.full((len(boxes),), -1, dtype=torch.long, device=boxes.device))
            continue
        matched = matcher(iou[offset:offset + count])
        out.append(torch.where(matched >= 0, matched + offset, torch.full_like(matched, -1)))
        offset += count
    return torch.cat(out)
