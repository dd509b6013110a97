"""Whole-image instance masks: box crops, and the way from a detector's input frame to the original
image (docs/detectors.md, "Detection output").

A detector whose masks cover the whole (padded) network input — YOLACT's assembled prototypes, a
SOLO-style mask branch — returns them from ``detect`` as ``image_masks`` (n, h, w) probabilities
at any resolution proportional to the padded input (h / H_pad = w / W_pad, e.g. a quarter of it).
``Detector.forward`` maps them to the original image with :func:`image_masks_to_original`:

1. bilinear resize to the padded input size (no-op when already there),
2. keep the resized image's own region (top-left ``image_size``; the rest is batch padding),
3. bilinear resize to the original image size (no-op when equal), clamp to [0, 1],
4. with ``boxes``, set to 0 outside each (original-frame) box.

Box convention of :func:`box_region`: boxes in mask pixels, pixel (i, j) covering [j, j+1) × [i, i+1);
a pixel belongs to a box when its centre (j + 0.5, i + 0.5) lies in the box grown by ``padding``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rsdet.errors import RsdetError

__all__ = ["box_region", "crop_masks", "image_masks_to_original"]


def box_region(boxes: Tensor, height: int, width: int, padding: float = 0.0) -> Tensor:
    """(P, height, width) 0/1 indicator of the pixels whose centre lies in each box (x1, y1, x2, y2 in
    pixels, grown by ``padding`` on every side; swapped corners are sorted first)."""
    x1 = torch.minimum(boxes[:, 0], boxes[:, 2])[:, None, None] - padding
    x2 = torch.maximum(boxes[:, 0], boxes[:, 2])[:, None, None] + padding
    y1 = torch.minimum(boxes[:, 1], boxes[:, 3])[:, None, None] - padding
    y2 = torch.maximum(boxes[:, 1], boxes[:, 3])[:, None, None] + padding
    xs = torch.arange(width, dtype=boxes.dtype, device=boxes.device)[None, None, :] + 0.5
    ys = torch.arange(height, dtype=boxes.dtype, device=boxes.device)[None, :, None] + 0.5
    return ((xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)).to(boxes.dtype)


def crop_masks(masks: Tensor, boxes: Tensor, padding: float = 0.0) -> Tensor:
    """``masks`` (P, h, w) set to 0 outside each box (:func:`box_region`)."""
    return masks * box_region(boxes, masks.shape[-2], masks.shape[-1], padding).to(masks.dtype)


def image_masks_to_original(probs: Tensor, image_size: tuple[int, int], padded_size: tuple[int, int],
                            original_size: tuple[int, int], boxes: Tensor | None = None) -> Tensor:
    """(n, h, w) mask probabilities over the padded input frame -> (n, 1, H, W) in the original image
    frame (module docstring, steps 1-4); ``boxes`` (n, 4) in the original frame crop them."""
    if probs.dim() != 3:
        raise RsdetError(f"image_masks must be (n, h, w) probabilities over the padded input, got shape "
                         f"{tuple(probs.shape)}")
    if probs.shape[0] == 0:
        return probs.new_zeros((0, 1, *original_size))
    if tuple(probs.shape[-2:]) != tuple(padded_size):
        probs = F.interpolate(probs[None], size=tuple(padded_size), mode="bilinear", align_corners=False)[0]
    probs = probs[:, : image_size[0], : image_size[1]]
    if tuple(probs.shape[-2:]) != tuple(original_size):
        probs = F.interpolate(probs[None], size=tuple(original_size), mode="bilinear", align_corners=False)[0]
    probs = probs.clamp(0.0, 1.0)
    if boxes is not None:
        probs = crop_masks(probs, boxes)
    return probs[:, None]
