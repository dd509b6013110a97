"""Drawing detections and ground truth onto images, for ``rsdet predict``, ``rsdet data browse`` and the
W&B media table.

Conventions (docs/visualisation.md, "Drawing"): boxes are (x1, y1, x2, y2) pixels of the original
image, labels are contiguous class indices in [0, C) named by ``class_names``, one colour per class
from a fixed palette (the same class has the same colour in every picture), masks are drawn under the
boxes at ``MASK_ALPHA`` opacity, a detection's mask is its probability map at or above 0.5 (the mask AP
convention of docs/evaluation.md). Crowd regions of the ground truth are filled grey and captioned
``crowd``. Small images are enlarged by a whole factor (nearest neighbour) so that the 10-pixel
captions stay readable: ``display_size`` is the shorter side a picture is enlarged to at least.

Everything is drawn with array operations on an (H, W, 3) uint8 canvas: masks are blended at the
image's own size in one pass and enlarged with the image, box outlines are slices, and a caption is
rendered by PIL's default font once per distinct text and then only pasted (:func:`caption_alpha`
caches it), so a picture costs little beside inference (scripts/bench_predict.py measures it).
"""

from __future__ import annotations

import colorsys
import functools
import math
import threading
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rsdet.vis.png import write_png

#: a detection's mask covers the pixels whose probability is at least this (docs/evaluation.md, "Mask AP")
MASK_THRESHOLD = 0.5
MASK_ALPHA = 0.45
#: opacity of a crowd region's grey fill
CROWD_ALPHA = 100 / 255
CROWD_COLOR = (150, 150, 150)
#: default shorter side (pixels) a drawn picture is enlarged to, by a whole factor; 0 keeps the size
DISPLAY_SIZE = 384
_TITLE_HEIGHT = 14
_FONT_LOCK = threading.Lock()


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One saturated RGB colour per class: hues spread by the golden ratio, so neighbouring class
    indices get distant hues and a class keeps its colour whatever the number of classes."""
    return list(_palette(int(num_classes)))


@functools.lru_cache(maxsize=64)
def _palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    colors = []
    for k in range(num_classes):
        hue = (k * 0.618033988749895) % 1.0
        value = 0.95 if k % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append((int(255 * r), int(255 * g), int(255 * b)))
    return tuple(colors)


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


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.load_default()  # Pillow's built-in 10-pixel font


@functools.lru_cache(maxsize=1)
def _line_box() -> tuple[int, int]:
    """(top, height) of a text line in the default font: every caption strip has this height."""
    _, top, _, bottom = _font().getbbox("Agjy|")
    return int(top), int(bottom - top)


@functools.lru_cache(maxsize=8192)
def _text_alpha(text: str) -> np.ndarray:
    """The coverage (0-255, (line height, advance) uint8) of ``text`` in PIL's default font."""
    from PIL import Image, ImageDraw

    top, height = _line_box()
    with _FONT_LOCK:  # one FreeType face shared by the drawing threads
        font = _font()
        width = max(1, int(math.ceil(font.getlength(text))))
        strip = Image.new("L", (width, height), 0)
        ImageDraw.Draw(strip).text((0, -top), text, fill=255, font=font)
    return np.asarray(strip)


@functools.lru_cache(maxsize=8192)
def caption_alpha(*pieces: str) -> np.ndarray:
    """The coverage (0-255, (h, w) uint8) of the text ``pieces`` side by side with a 1-pixel margin: a
    caption strip. Each piece is rendered once (a class name, a two-decimal score: they repeat across
    images, so after the first pictures captions are only composed, never rendered); read-only."""
    parts = [_text_alpha(p) for p in pieces if p]
    _, height = _line_box()
    out = np.zeros((height + 2, sum(a.shape[1] for a in parts) + 2), dtype=np.uint8)
    x = 1
    for a in parts:
        out[1 : 1 + height, x : x + a.shape[1]] = a
        x += a.shape[1]
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8192)
def _caption_patch(pieces: tuple[str, ...], background: tuple[int, int, int],
                   foreground: tuple[int, int, int]) -> np.ndarray:
    """The (h, w, 3) caption strip of ``pieces``: ``foreground`` on ``background`` by its coverage."""
    a = caption_alpha(*pieces)[:, :, None].astype(np.uint16)
    bg = np.asarray(background, dtype=np.uint16)
    fg = np.asarray(foreground, dtype=np.uint16)
    out = ((bg * (255 - a) + fg * a + 127) // 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def _paste_caption(canvas: np.ndarray, x: int, y: int, pieces: tuple[str, ...], background, foreground) -> None:
    """The caption of ``pieces`` on a strip of ``background`` with its top-left corner at (x, y),
    clipped to the canvas."""
    patch = _caption_patch(pieces, tuple(background), tuple(foreground))
    height, width = canvas.shape[:2]
    x, y = max(0, min(x, width - 1)), max(0, min(y, height - 1))
    h, w = min(patch.shape[0], height - y), min(patch.shape[1], width - x)
    canvas[y : y + h, x : x + w] = patch[:h, :w]


def _rgb(color: str) -> tuple[int, int, int]:
    return (0, 0, 0) if color == "black" else (255, 255, 255)


def _enlarge(pixels: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) enlarged ``factor`` times by pixel repetition (nearest neighbour): each pixel repeated
    along its row, then each row copied ``factor`` times."""
    if factor == 1:
        return pixels.copy(order="C")  # never draw into the caller's image
    h, w, c = pixels.shape
    wide = np.repeat(pixels, factor, axis=1).reshape(h, 1, w * factor * c)
    out = np.empty((h, factor, w * factor * c), dtype=np.uint8)
    out[...] = wide
    return out.reshape(h * factor, w * factor, c)


def _mask_stack(masks: Tensor) -> Tensor:
    m = masks.detach().cpu()
    if m.dim() == 4:
        m = m[:, 0]
    return m >= MASK_THRESHOLD if m.dtype.is_floating_point else m.bool()


def _blend_masks(pixels: np.ndarray, masks: Tensor, colors: np.ndarray) -> np.ndarray:
    """Each pixel covered by a mask takes the colour of the last mask covering it at ``MASK_ALPHA``
    opacity (later instances are drawn over earlier ones); one blend per pixel."""
    m = _mask_stack(masks)
    if tuple(m.shape[-2:]) != tuple(pixels.shape[:2]):
        raise ValueError(f"masks of size {tuple(m.shape[-2:])} for an image of size {tuple(pixels.shape[:2])}: "
                         "masks are drawn at the image's own size (docs/visualisation.md)")
    if not m.any():
        return pixels
    n = m.shape[0]
    # the last covering mask of each pixel: the first along the reversed stack
    last = n - 1 - torch.flip(m, dims=[0]).to(torch.uint8).argmax(dim=0)
    covered = m.any(dim=0).numpy()
    owner = last.numpy()[covered]
    out = pixels.copy()
    mixed = pixels[covered].astype(np.float32) * (1 - MASK_ALPHA) + colors[owner].astype(np.float32) * MASK_ALPHA
    out[covered] = np.rint(mixed).astype(np.uint8)
    return out


def _box_pixels(boxes: Tensor, factor: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Boxes (n, 4) as inclusive pixel corners of the enlarged canvas: ×factor, rounded, clipped."""
    r = np.rint(boxes.detach().float().cpu().numpy().astype(np.float64) * factor).astype(np.int64).reshape(-1, 4)
    np.clip(r[:, 0::2], 0, width - 1, out=r[:, 0::2])
    np.clip(r[:, 1::2], 0, height - 1, out=r[:, 1::2])
    return [tuple(b) for b in r.tolist()]


def _outline(canvas: np.ndarray, rect, color: np.ndarray, line: int) -> None:
    """The outline of ``rect`` (inclusive pixel corners), ``line`` pixels wide, inside the rectangle."""
    x1, y1, x2, y2 = rect
    if x2 < x1 or y2 < y1:
        return
    canvas[y1 : min(y1 + line, y2 + 1), x1 : x2 + 1] = color
    canvas[max(y2 - line + 1, y1) : y2 + 1, x1 : x2 + 1] = color
    canvas[y1 : y2 + 1, x1 : min(x1 + line, x2 + 1)] = color
    canvas[y1 : y2 + 1, max(x2 - line + 1, x1) : x2 + 1] = color


def _fill(canvas: np.ndarray, rect, color, alpha: float) -> None:
    x1, y1, x2, y2 = rect
    region = canvas[y1 : y2 + 1, x1 : x2 + 1]
    region[:] = np.rint(region * (1 - alpha) + np.asarray(color, np.float32) * alpha).astype(np.uint8)


def _caption(name: str, score: float | None) -> tuple[str, ...]:
    """The pieces of a caption: ``<name>`` or ``<name> <score>`` (two decimals)."""
    return (name,) if score is None else (f"{name} ", f"{score:.2f}")


def _name(class_names: list[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class {label}"


def draw_instances(image: Tensor, boxes: Tensor, labels: Tensor, class_names: list[str], *,
                   scores: Tensor | None = None, masks: Tensor | None = None, crowd: Tensor | None = None,
                   factor: int = 1, width: int | None = None) -> Tensor:
    """``image`` (3, H, W) with the instances drawn, enlarged ``factor`` times: masks (bool or
    probabilities (n, [1,] H, W)) under boxes (n, 4) captioned with the class name (and score) on a
    strip of the class colour at the box's top-left corner; rows of ``crowd`` (bool (n,)) are grey,
    filled and captioned ``crowd: <name>``. Returns uint8 (3, H * factor, W * factor)."""
    pixels = to_uint8(image).detach().cpu().permute(1, 2, 0).numpy()
    n = int(boxes.shape[0])
    if n == 0:
        return torch.from_numpy(_enlarge(pixels, factor)).permute(2, 0, 1)
    labels = labels.detach().cpu().long().tolist()
    score_list = scores.detach().float().cpu().tolist() if scores is not None else [None] * n
    crowd_list = crowd.detach().cpu().bool().tolist() if crowd is not None else [False] * n
    palette = class_colors(max(len(class_names), max(labels) + 1, 1))
    colors = [CROWD_COLOR if c else palette[lab] for lab, c in zip(labels, crowd_list)]
    color_rows = np.asarray(colors, dtype=np.uint8)
    if masks is not None and masks.numel():
        pixels = _blend_masks(pixels, masks, color_rows)
    canvas = _enlarge(pixels, factor)
    height, width_px = canvas.shape[:2]
    line = width or max(1, min(3, factor + (1 if min(height, width_px) >= 600 else 0)))
    rects = _box_pixels(boxes, factor, height, width_px)
    crowds = [i for i in range(n) if crowd_list[i]]
    plain = [i for i in range(n) if not crowd_list[i]]
    for i in crowds:  # crowd first: the instances stay on top
        _fill(canvas, rects[i], colors[i], CROWD_ALPHA)
    for i in crowds + plain:
        _outline(canvas, rects[i], color_rows[i], line)
    for i in crowds + plain:
        pieces = _caption(("crowd: " if crowd_list[i] else "") + _name(class_names, labels[i]), score_list[i])
        x1, y1 = rects[i][:2]
        _paste_caption(canvas, x1 + line, y1 + line, pieces, colors[i], _rgb(text_color(colors[i])))
    return torch.from_numpy(canvas).permute(2, 0, 1)


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
    """``panel`` with a black strip of ``title`` (white) above it."""
    width = int(panel.shape[-1])
    strip = np.zeros((_TITLE_HEIGHT, width, 3), dtype=np.uint8)
    _paste_caption(strip, 2, 0, (title,), (0, 0, 0), (255, 255, 255))
    return torch.cat([torch.from_numpy(strip).permute(2, 0, 1), to_uint8(panel).cpu()], dim=-2)


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
    """Write a uint8 (3, H, W) image as PNG (zlib level 1 by default; rsdet/vis/png.py)."""
    pixels = to_uint8(image).detach().cpu().permute(1, 2, 0).numpy()
    return write_png(pixels, path, compress_level=compress_level)
