"""Drawing detections and ground truth onto images (torchvision's ``draw_bounding_boxes`` and
``draw_segmentation_masks``), for ``rsdet predict``, ``rsdet data browse`` and the W&B media table.

Conventions (docs/visualisation.md): boxes are (x1, y1, x2, y2) pixels of the original image,
labels are contiguous class indices in [0, C) named by ``class_names``, one colour per class from a
fixed palette (the same class has the same colour in every picture), masks are drawn under the boxes
at ``MASK_ALPHA`` opacity, a detection's mask is its probability map at or above 0.5 (the mask AP
convention of docs/evaluation.md). Crowd regions of the ground truth are filled grey and captioned
``crowd``. Small images are enlarged by a whole factor (nearest neighbour) so that the 10-pixel
captions stay readable: ``display_size`` is the shorter side a picture is enlarged to at least.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

#: a detection's mask covers the pixels whose probability is at least this (docs/evaluation.md, "Mask AP")
MASK_THRESHOLD = 0.5
MASK_ALPHA = 0.45
CROWD_COLOR = (150, 150, 150)
#: default shorter side (pixels) a drawn picture is enlarged to, by a whole factor; 0 keeps the size
DISPLAY_SIZE = 384
_TITLE_HEIGHT = 14


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One saturated RGB colour per class: hues spread by the golden ratio, so neighbouring class
    indices get distant hues and a class keeps its colour whatever the number of classes."""
    colors = []
    for k in range(num_classes):
        hue = (k * 0.618033988749895) % 1.0
        value = 0.95 if k % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append((int(255 * r), int(255 * g), int(255 * b)))
    return colors


def text_color(background: tuple[int, int, int]) -> str:
    """Black or white, whichever reads better on ``background`` (its luma, ITU-R BT.601 weights)."""
    r, g, b = background
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "white"


def to_uint8(image: Tensor) -> Tensor:
    """A (3, H, W) image as uint8: float images are in [0, 1] (the datasets' convention)."""
    if image.dtype == torch.uint8:
        return image
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def display_factor(height: int, width: int, display_size: int = DISPLAY_SIZE) -> int:
    """The whole enlargement factor that brings the shorter side to at least ``display_size``."""
    if not display_size or min(height, width) <= 0:
        return 1
    return max(1, math.ceil(display_size / min(height, width)))


def _enlarge(image: Tensor, factor: int) -> Tensor:
    if factor == 1:
        return image
    return image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def _caption(name: str, score: float | None) -> str:
    return name if score is None else f"{name} {score:.2f}"


def _name(class_names: list[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class {label}"


def draw_instances(image: Tensor, boxes: Tensor, labels: Tensor, class_names: list[str], *,
                   scores: Tensor | None = None, masks: Tensor | None = None, crowd: Tensor | None = None,
                   factor: int = 1, width: int | None = None) -> Tensor:
    """``image`` (3, H, W) with the instances drawn, enlarged ``factor`` times: masks (bool or
    probabilities (n, [1,] H, W)) under boxes (n, 4) captioned with the class name (and score);
    rows of ``crowd`` (bool (n,)) are grey, filled and captioned ``crowd: <name>``. Returns uint8."""
    canvas = _enlarge(to_uint8(image).cpu(), factor)
    n = int(boxes.shape[0])
    if n == 0:
        return canvas
    boxes = boxes.detach().float().cpu()
    labels = labels.detach().cpu().long().tolist()
    score_list = scores.detach().float().cpu().tolist() if scores is not None else [None] * n
    crowd_list = crowd.detach().cpu().bool().tolist() if crowd is not None else [False] * n
    palette = class_colors(max(len(class_names), max(labels) + 1, 1))
    colors = [CROWD_COLOR if c else palette[lab] for lab, c in zip(labels, crowd_list)]
    if masks is not None and masks.numel():
        m = masks.detach().cpu()
        if m.dim() == 4:
            m = m[:, 0]
        m = m >= MASK_THRESHOLD if m.dtype.is_floating_point else m.bool()
        keep = m.flatten(1).any(1)
        if keep.any():
            idx = keep.nonzero().flatten().tolist()
            canvas = draw_segmentation_masks(canvas, _enlarge(m[idx], factor), alpha=MASK_ALPHA,
                                             colors=[colors[i] for i in idx])
    captions = [("crowd: " if c else "") + _caption(_name(class_names, lab), s)
                for lab, s, c in zip(labels, score_list, crowd_list)]
    line = width or max(1, min(3, factor + (1 if min(canvas.shape[-2:]) >= 600 else 0)))
    scaled = boxes * factor
    plain = [i for i in range(n) if not crowd_list[i]]
    crowds = [i for i in range(n) if crowd_list[i]]
    for idx, fill in ((crowds, True), (plain, False)):  # crowd first: instances stay on top
        if not idx:
            continue
        canvas = draw_bounding_boxes(canvas, scaled[idx], labels=[captions[i] for i in idx],
                                     colors=[colors[i] for i in idx], fill=fill, width=line,
                                     label_colors=[text_color(colors[i]) for i in idx],
                                     label_background_colors=[colors[i] for i in idx], fill_labels=True)
    return canvas


def draw_detections(image: Tensor, detections: dict, class_names: list[str], *, factor: int = 1,
                    score_thresh: float | None = None) -> Tensor:
    """A detector's output for one image (``boxes``, ``scores``, ``labels``, optional ``masks``, as
    ``Detector.forward`` returns them) drawn on ``image``; ``score_thresh`` hides lower scores."""
    keep = slice(None)
    if score_thresh is not None:
        keep = detections["scores"] > float(score_thresh)
    masks = detections.get("masks")
    return draw_instances(image, detections["boxes"][keep], detections["labels"][keep], class_names,
                          scores=detections["scores"][keep], masks=None if masks is None else masks[keep],
                          factor=factor)


def titled(panel: Tensor, title: str) -> Tensor:
    """``panel`` with a black strip of ``title`` above it."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (int(panel.shape[-1]), _TITLE_HEIGHT), (0, 0, 0))
    ImageDraw.Draw(strip).text((3, 1), title, fill=(255, 255, 255))
    top = torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1)
    return torch.cat([top, panel], dim=-2)


def side_by_side(panels: list[Tensor], gap: int = 4) -> Tensor:
    """Panels (3, H_i, W_i) next to each other on a white background, top-aligned."""
    height = max(int(p.shape[-2]) for p in panels)
    width = sum(int(p.shape[-1]) for p in panels) + gap * (len(panels) - 1)
    out = torch.full((3, height, width), 255, dtype=torch.uint8)
    x = 0
    for p in panels:
        out[:, : p.shape[-2], x : x + p.shape[-1]] = p
        x += int(p.shape[-1]) + gap
    return out


def save_png(image: Tensor, path: str | Path, compress_level: int = 1) -> Path:
    """Write a uint8 (3, H, W) image as PNG (zlib level 1: a fast write, ~20% larger files than 6)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image).permute(1, 2, 0).contiguous().numpy()).save(path, compress_level=compress_level)
    return path
