"""Drawing one image of the synthetic "shapes" detection dataset.

Everything here is a pure function of ``(params, rng)``: the generator in ``shapes.py`` seeds one
``numpy.random.Generator`` per image from ``(seed, split, index)``, so an image never depends on
how many other images are generated, nor on the order they are written.

Design choices that keep the task learnable yet not trivial:

* the class is the *shape*; the colour is drawn from a saturated palette independently of it,
  so colour carries no label information — unless ``DrawParams.class_colours`` makes the colour part
  of the class (the long-tailed ``shapes_lvis`` variant: one class per shape × colour, drawn with
  ``class_weights``; an object is then never placed over one of the same colour);
* the background is a muted, low-saturation texture (smooth colour field, faint strokes and
  blobs, pixel noise), so objects stand out by saturation and outline, not by a flat colour;
* object sizes are drawn per COCO size range (area < 32², 32²–96², > 96²) so every AP_s/m/l
  bucket of the evaluation is populated;
* objects may partially occlude earlier ones (at most ``max_occlusion`` of an object hidden);
  annotations describe the *visible* pixels (``polygons.mask_to_polygons``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from rsdet.data.polygons import mask_to_polygons

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "crescent")

# Saturated, mutually distinct colours; the background is kept desaturated so all of them
# (including near-white and near-black) contrast with it.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (225, 40, 40),  # red
    (40, 185, 60),  # green
    (45, 85, 225),  # blue
    (240, 215, 35),  # yellow
    (205, 50, 205),  # magenta
    (35, 205, 215),  # cyan
    (245, 135, 25),  # orange
    (245, 245, 245),  # white
    (20, 20, 20),  # black
    (125, 55, 185),  # purple
    (135, 85, 35),  # brown
    (250, 150, 190),  # pink
)

COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white", "black",
                                  "purple", "brown", "pink")

# COCO size ranges are defined on the object *area* in pixels: small < 32², large > 96².
SMALL_MAX, LARGE_MIN = 32.0, 96.0


def _circle(n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.5) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, 2 * points, endpoint=False) - math.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array(
        [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
         (-1, -a), (-a, -a)], dtype=np.float64)  # fmt: skip


def _crescent(cut_offset: float = 0.5, cut_radius: float = 0.85, n: int = 24) -> np.ndarray:
    # Unit disc minus a disc of radius `cut_radius` centred at (cut_offset, 0): the outer arc on
    # the left, then the inner arc back through the cut disc's leftmost point.
    xi = (1.0 - cut_radius**2 + cut_offset**2) / (2.0 * cut_offset)  # where the circles cross
    yi = math.sqrt(1.0 - xi * xi)
    a0 = math.atan2(yi, xi)
    outer = np.linspace(a0, 2.0 * math.pi - a0, n)
    b0 = math.atan2(yi, xi - cut_offset)
    inner = np.linspace(2.0 * math.pi - b0, b0, n)[1:-1]
    pts = np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], axis=1),
            np.stack([cut_offset + cut_radius * np.cos(inner), cut_radius * np.sin(inner)], axis=1),
        ]
    )
    return pts - (pts.min(0) + pts.max(0)) / 2  # centre the bounding box


_UNIT_SHAPES: dict[str, np.ndarray] = {
    "circle": _circle(),
    "square": np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64),
    "triangle": _circle(3) @ np.array([[0, 1], [-1, 0]]),  # apex up
    "star": _star(),
    "cross": _cross(),
    "crescent": _crescent(),
}


def _shoelace(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


@dataclass(frozen=True)
class DrawParams:
    """Per-image generation parameters (see ``shapes.ensure_shapes_dataset`` for meanings)."""

    image_size: int
    classes: tuple[str, ...]  # the shape of each class (repeated when the colour is part of the class)
    min_objects: int
    max_objects: int
    empty_fraction: float
    size_mix: tuple[float, float, float]
    min_object_size: float
    max_object_frac: float
    max_occlusion: float
    occlusion_prob: float
    noise: tuple[float, float]
    # Colour as part of the class: palette index of each class (None: a free colour per object).
    class_colours: tuple[int, ...] | None = None
    # Probability of each class per object (None: uniform).
    class_weights: tuple[float, ...] | None = None


@dataclass
class DrawnObject:
    label: int  # index into DrawParams.classes
    segmentation: list[list[float]]
    area: float
    bbox: list[float]  # COCO [x, y, w, h]
    occluded: bool


def _size_ranges(p: DrawParams) -> list[tuple[float, float, float]]:
    """(probability, low, high) of sqrt(area) per COCO size range that fits in the image."""
    top = p.max_object_frac * p.image_size
    edges = [(p.min_object_size, SMALL_MAX), (SMALL_MAX, LARGE_MIN), (LARGE_MIN, top)]
    out = [(w, lo, min(hi, top)) for w, (lo, hi) in zip(p.size_mix, edges) if min(hi, top) > lo]
    total = sum(w for w, _, _ in out)
    if not out or total <= 0:
        return [(1.0, p.min_object_size, max(top, p.min_object_size + 1.0))]
    return [(w / total, lo, hi) for w, lo, hi in out]


def _sample_polygon(p: DrawParams, rng: np.random.Generator, label: int) -> np.ndarray:
    """A polygon (k, 2) of class ``label`` centred at the origin with a COCO-range-drawn area."""
    ranges = _size_ranges(p)
    pick = rng.choice(len(ranges), p=[w for w, _, _ in ranges])
    _, lo, hi = ranges[pick]
    side = math.exp(rng.uniform(math.log(lo), math.log(hi)))  # log-uniform sqrt(area)
    pts = _UNIT_SHAPES[p.classes[label]] * np.array([1.0, rng.uniform(0.85, 1.15)])
    theta = 0.0 if p.classes[label] == "circle" else rng.uniform(0.0, 2.0 * math.pi)
    c, s = math.cos(theta), math.sin(theta)
    pts = pts @ np.array([[c, s], [-s, c]])
    pts = pts * (side / math.sqrt(_shoelace(pts)))
    extent = float((pts.max(0) - pts.min(0)).max())
    limit = p.image_size - 4.0
    if extent > limit:  # thin shapes (star, crescent) of large area may not fit: shrink
        pts = pts * (limit / extent)
    return pts


def _rasterise(poly: np.ndarray, size: int) -> np.ndarray:
    # pycocotools is the rasteriser the evaluation uses for `segmentation`, so painting with it
    # makes the drawn pixels identical to the annotation's mask.
    rle = mask_utils.frPyObjects([poly.ravel().tolist()], size, size)
    with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's copy=False deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)[:, :, 0].astype(bool)


def _background(p: DrawParams, rng: np.random.Generator) -> np.ndarray:
    s = p.image_size
    base = rng.uniform(70, 170) + rng.uniform(-18, 18, size=3)  # muted, nearly grey
    field = rng.uniform(-40, 40, size=(5, 5, 3)) * rng.uniform(0.4, 1.0)
    field_img = Image.fromarray(np.clip(field + 128, 0, 255).astype(np.uint8))
    smooth = np.asarray(field_img.resize((s, s), Image.BILINEAR), dtype=np.float32) - 128
    img = Image.fromarray(np.clip(base + smooth, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # Clutter: faint strokes and blobs, grey-ish so they never look like a palette object.
    for _ in range(int(rng.integers(2, 9))):
        pts = [tuple(xy) for xy in rng.uniform(-0.1 * s, 1.1 * s, size=(int(rng.integers(2, 5)), 2))]
        tone = int(min(max(base.mean() + rng.uniform(-55, 55), 0.0), 255.0))
        draw.line(pts, fill=(tone, tone, tone), width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, s, size=2)
        rx, ry = rng.uniform(4, 0.2 * s, size=2)
        tone = int(min(max(base.mean() + rng.uniform(-30, 30), 0.0), 255.0))
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(tone, tone, tone))
    return np.asarray(img, dtype=np.float32).copy()


def _place(
    p: DrawParams, rng: np.random.Generator, poly: np.ndarray, full: list[np.ndarray],
    visible: list[np.ndarray], boxes: list[tuple[float, float, float, float]],
    keep_apart: tuple[np.ndarray, ...] = (),
) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """Try positions for ``poly``; return (translated polygon, mask) or None if none is allowed.
    ``keep_apart``: visible masks the new object must not overlap (same-coloured objects)."""
    s = p.image_size
    lo, hi = poly.min(0), poly.max(0)
    for _ in range(12):
        if boxes and rng.random() < p.occlusion_prob:
            # Aim at an existing object's box to create partial occlusions on purpose.
            bx0, by0, bx1, by1 = boxes[int(rng.integers(len(boxes)))]
            centre = rng.uniform([bx0, by0], [bx1, by1])
        else:
            centre = rng.uniform(0, s, size=2)
        centre = np.minimum(np.maximum(centre, 1.0 - lo), s - 1.0 - hi)  # keep the whole shape in the image
        # Rounded before rasterising: the stored polygon must rasterise to the painted pixels.
        moved = np.round(poly + centre, 2)
        mask = _rasterise(moved, s)
        area = int(mask.sum())
        if area == 0:
            continue
        if any(np.any(v & mask) for v in keep_apart):
            continue
        ok = True
        for f, v in zip(full, visible):
            hidden = int(np.count_nonzero(v & mask))
            if hidden == 0:
                continue
            # Partial occlusion only: the occluded object keeps most of its pixels ...
            if int(v.sum()) - hidden < (1.0 - p.max_occlusion) * int(f.sum()):
                ok = False
                break
            # ... and the occluder sticks out of it. A connected occluder reaching outside `f`
            # joins the outside region, so the visible part never gets a hole (which COCO
            # polygons cannot represent).
            if np.count_nonzero(mask & ~f) < 0.25 * area:
                ok = False
                break
        if ok:
            return moved, mask
    return None


def draw_image(p: DrawParams, rng: np.random.Generator) -> tuple[np.ndarray, list[DrawnObject]]:
    """Render one image; returns (uint8 array [H, W, 3], objects in drawing order)."""
    s = p.image_size
    canvas = _background(p, rng)
    n = 0 if rng.random() < p.empty_fraction else int(rng.integers(p.min_objects, p.max_objects + 1))
    labels: list[int] = []
    full: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    boxes: list[tuple[float, float, float, float]] = []
    polys: list[np.ndarray] = []
    colours: list[int] = []
    for _ in range(n):
        if p.class_weights is None:
            label = int(rng.integers(len(p.classes)))
        else:
            label = int(rng.choice(len(p.classes), p=p.class_weights))
        same = ()
        if p.class_colours is not None:  # neighbours of one colour would merge visually: keep them apart
            same = tuple(v for v, c in zip(visible, colours) if c == p.class_colours[label])
        placed = _place(p, rng, _sample_polygon(p, rng, label), full, visible, boxes, same)
        if placed is None:
            continue
        poly, mask = placed
        if p.class_colours is not None:
            colour = p.class_colours[label]
        else:
            # A colour different from every object it touches, so neighbours never merge visually.
            touching = {colours[j] for j, v in enumerate(visible) if np.any(v & mask)}
            choices = [c for c in range(len(PALETTE)) if c not in touching]
            colour = int(rng.choice(choices))
        # Linear shading across the object: a flat fill would make the task colour-thresholding.
        gx, gy = rng.uniform(-1, 1, size=2) * rng.uniform(0.0, 0.35) / max(s, 1)
        cx, cy = poly.mean(0)
        ys, xs = np.nonzero(mask)
        shade = 1.0 + gx * (xs - cx) * 2 + gy * (ys - cy) * 2
        canvas[ys, xs] = np.asarray(PALETTE[colour], dtype=np.float32) * shade[:, None]
        for v in visible:
            v &= ~mask
        labels.append(label)
        full.append(mask)
        visible.append(mask.copy())
        colours.append(colour)
        polys.append(poly)
        (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
        boxes.append((float(x0), float(y0), float(x1), float(y1)))

    sigma = rng.uniform(*p.noise)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * sigma
    image = np.clip(canvas, 0, 255).astype(np.uint8)

    objects: list[DrawnObject] = []
    for label, f, v, poly in zip(labels, full, visible, polys):
        occluded = bool(np.count_nonzero(f & ~v))
        if occluded:
            seg = mask_to_polygons(v)
        else:  # unoccluded: the drawn polygon itself, rasterised exactly like `f`
            seg = [poly.ravel().tolist()]
        if not seg:
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, s, s))
        area = float(mask_utils.area(rle))
        if area <= 0:
            continue
        bbox = [float(x) for x in mask_utils.toBbox(rle)]
        objects.append(DrawnObject(label, seg, area, bbox, occluded))
    return image, objects

