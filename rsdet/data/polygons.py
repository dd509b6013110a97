"""Binary mask → COCO polygons, exactly.

The shapes generator lets objects occlude each other, so the visible part of an occluded shape
is no longer the polygon it was drawn from. Instead of clipping polygons (general polygon
difference is fiddly for the non-convex star, cross and crescent), we rasterise, subtract the
occluders' pixels, and trace the outline of what is left along pixel *edges*. A polygon whose
vertices sit on pixel corners rasterises back to exactly the same pixels under pycocotools'
`frPyObjects` (pixel (x, y) covers [x, x+1) × [y, y+1)), so the stored `segmentation`, the
`area` and the `bbox` all agree with the pixels in the image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_to_polygons", "polygon_signed_area"]

# Directions of travel along pixel edges: east, south, west, north (image coordinates, y down).
# The traced boundary keeps the foreground on its right, so outer outlines run clockwise on screen.
_EAST, _SOUTH, _WEST, _NORTH = 0, 1, 2, 3


def polygon_signed_area(flat: list[float]) -> float:
    """Shoelace area of a flat ``[x0, y0, x1, y1, ...]`` polygon; > 0 for outer outlines here."""
    xs = np.asarray(flat[0::2], dtype=np.float64)
    ys = np.asarray(flat[1::2], dtype=np.float64)
    return 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(np.roll(xs, -1), ys))


def mask_to_polygons(mask: np.ndarray, *, keep_holes: bool = False) -> list[list[float]]:
    """Trace every 4-connected component of ``mask`` as a polygon on pixel corners.

    Returns flat COCO polygons ``[x0, y0, x1, y1, ...]`` with one vertex per corner (collinear
    runs merged). Holes are outlines with negative signed area; COCO polygons cannot express
    them (pycocotools unions the polygons of an annotation), so they are dropped unless
    ``keep_holes`` — the generator never creates holes, see ``shapes_draw``.
    """
    mask = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return []
    y0, x0 = int(ys.min()), int(xs.min())
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    h, w = crop.shape
    stride = w + 1  # vertices form an (h+1) x (w+1) grid; vertex id = y * stride + x

    padded = np.pad(crop, 1)
    core = padded[1:-1, 1:-1]
    # For each direction: foreground pixels whose neighbour on that side is background, and the
    # vertex where the corresponding boundary edge starts.
    yy, xx = np.mgrid[0:h, 0:w]
    starts = {
        _EAST: (core & ~padded[:-2, 1:-1], yy * stride + xx),  # top edge, left → right
        _SOUTH: (core & ~padded[1:-1, 2:], yy * stride + xx + 1),  # right edge, top → bottom
        _WEST: (core & ~padded[2:, 1:-1], (yy + 1) * stride + xx + 1),  # bottom edge, right → left
        _NORTH: (core & ~padded[1:-1, :-2], (yy + 1) * stride + xx),  # left edge, bottom → top
    }
    has_edge = np.zeros(((h + 1) * stride, 4), dtype=np.uint8)
    for direction, (sel, vertex) in starts.items():
        has_edge[vertex[sel], direction] = 1
    out = bytearray(has_edge.tobytes())  # out[v * 4 + d]: an edge leaves vertex v heading d
    unused = bytearray(out)
    step = (1, stride, -1, -stride)

    polygons: list[list[float]] = []
    for key in np.flatnonzero(has_edge.ravel()).tolist():
        if not unused[key]:
            continue
        start_v, start_d = divmod(key, 4)
        v, d = start_v, start_d
        corners: list[int] = []
        prev_d = -1
        while True:
            unused[v * 4 + d] = 0
            if d != prev_d:
                corners.append(v)
            prev_d = d
            v += step[d]
            # Turn right first: at a vertex shared by two diagonal pixels this keeps each
            # 4-connected component on its own outline, and makes "next edge" a permutation,
            # so every walk closes on its starting edge.
            right, left = (d + 1) & 3, (d + 3) & 3
            if out[v * 4 + right]:
                d = right
            elif not out[v * 4 + d]:
                d = left
            if v == start_v and d == start_d:
                break
        if prev_d == start_d:  # the walk started in the middle of a straight run
            corners.pop(0)
        flat: list[float] = []
        for c in corners:
            cy, cx = divmod(c, stride)
            flat.append(float(cx + x0))
            flat.append(float(cy + y0))
        if keep_holes or polygon_signed_area(flat) > 0:
            polygons.append(flat)
    return polygons
