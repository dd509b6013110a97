"""SOLO's grid assignment (SOLOv2, Wang et al., NeurIPS 2020, §3; docs/detectors.md, "SOLOv2").

Each pyramid level divides the (padded) input into G × G cells and takes the instances whose scale
sqrt(w · h) of the ground-truth box lies in its range [lower, upper] (both ends inclusive; the ranges
of neighbouring levels overlap, so an instance may train two levels). Per instance and level:

- its centre (c_y, c_x) is the centre of mass of its mask; the centre cell is
  (floor(c_y · G / H), floor(c_x · G / W)) on the padded input H × W;
- the *centre region* is the box centred there with half sizes σ · h / 2, σ · w / 2 (σ = 0.2, h, w
  the GT box size), clipped to the grid, in cells: rows floor((c_y ± σh/2) · G / H);
- the positive cells are the centre region's cells at most one cell from the centre cell (a 3 × 3
  cap), so 1 to 9 cells;
- instances are visited in annotation order and a cell already taken by an earlier instance keeps
  it (the RS-SOLOv2 head's rule; the original SOLOv2 lets the later instance overwrite the class).
  Instances whose mask is empty are skipped.

The result per level is, for every cell in raster order (row-major), the assigned class (or
``NEGATIVE``) and the index of the instance it was assigned to (or -1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rsdet.errors import ConfigError
from rsdet.models.stage import NEGATIVE

__all__ = ["centre_of_mass", "centre_cells", "solo_assign"]


def centre_of_mass(masks: Tensor) -> Tensor:
    """(n, 2) (c_y, c_x) centres of mass of binary masks (n, H, W), in pixels with pixel (i, j) at
    coordinates (i, j) (the convention of an array's centre of mass); NaN for an empty mask."""
    m = masks.float()
    total = m.sum((1, 2))
    ys = torch.arange(m.shape[1], dtype=m.dtype, device=m.device)
    xs = torch.arange(m.shape[2], dtype=m.dtype, device=m.device)
    cy = (m.sum(2) * ys).sum(1) / total
    cx = (m.sum(1) * xs).sum(1) / total
    return torch.stack([cy, cx], 1)


def _cell(coord: float, size: int, grid: int) -> int:
    return int(math.floor(coord * grid / size))


def centre_cells(centre: tuple[float, float], half: tuple[float, float], padded: tuple[int, int],
                 grid: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive, of the positive cells of one instance on a G × G grid:
    its centre region (``half`` = (σh/2, σw/2)) clipped to the grid and to the 3 × 3 cells around the
    centre cell (module docstring)."""
    (cy, cx), (hh, hw), (height, width) = centre, half, padded
    row, col = _cell(cy, height, grid), _cell(cx, width, grid)
    top = max(0, _cell(cy - hh, height, grid), row - 1)
    bottom = min(grid - 1, _cell(cy + hh, height, grid), row + 1)
    left = max(0, _cell(cx - hw, width, grid), col - 1)
    right = min(grid - 1, _cell(cx + hw, width, grid), col + 1)
    return top, bottom, left, right


def solo_assign(boxes: Tensor, labels: Tensor, masks: Tensor, padded: tuple[int, int], grids: Sequence[int],
                scale_ranges: Sequence[Sequence[float]], sigma: float = 0.2) -> list[tuple[Tensor, Tensor]]:
    """Per level, ``(classes, instance)`` (G², each) of one image: the class of each cell in raster
    order (``NEGATIVE`` for a background cell) and the index into ``boxes`` of its instance (-1).

    ``boxes`` (n, 4) x1, y1, x2, y2 and ``masks`` (n, h, w) binary, in the resized image frame
    (h, w <= the padded input size ``padded``); ``labels`` (n,) in [0, C)."""
    if len(grids) != len(scale_ranges):
        raise ConfigError(f"detector.head.grids has {len(grids)} levels but detector.head.scale_ranges has "
                          f"{len(scale_ranges)}; give one [lower, upper] range per grid")
    device = labels.device
    scales = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    centres = centre_of_mass(masks).tolist() if len(masks) else []
    half_h = (0.5 * sigma * (boxes[:, 3] - boxes[:, 1])).tolist()
    half_w = (0.5 * sigma * (boxes[:, 2] - boxes[:, 0])).tolist()
    nonempty = (masks.flatten(1).any(1) if len(masks) else torch.zeros(0, dtype=torch.bool)).tolist()
    out = []
    for grid, (lower, upper) in zip(grids, scale_ranges):
        grid = int(grid)
        classes = torch.full((grid, grid), NEGATIVE, dtype=torch.long)
        owner = torch.full((grid, grid), -1, dtype=torch.long)
        hits = torch.nonzero((scales >= float(lower)) & (scales <= float(upper))).flatten().tolist()
        for k in hits:
            if not nonempty[k]:
                continue
            top, bottom, left, right = centre_cells(tuple(centres[k]), (half_h[k], half_w[k]), padded, grid)
            free = owner[top:bottom + 1, left:right + 1] < 0
            classes[top:bottom + 1, left:right + 1][free] = int(labels[k])
            owner[top:bottom + 1, left:right + 1][free] = k
        out.append((classes.flatten().to(device), owner.flatten().to(device)))
    return out
