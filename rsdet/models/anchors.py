"""Anchors of the dense detectors: the grid of every pyramid level and the octave anchor sizes.

ATSS and PAA place 3 square anchors of 4 · stride · 2^(k/3) at (x · stride, y · stride); YOLACT 3
aspect ratios of one size per level at ((x + 0.5) · stride, (y + 0.5) · stride) (docs/detectors.md).
Rows are laid out level by level, then y, x and anchor: the order ``rsdet.models.heads.layers.
flatten_levels`` gives the head outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rsdet.errors import ConfigError

__all__ = ["grid_anchors", "dense_anchor_sizes"]


def dense_anchor_sizes(strides: Sequence[int], octave_base_scale: float = 4,
                       scales_per_octave: int = 3) -> list[tuple[float, ...]]:
    """Anchor sizes per level: ``octave_base_scale * stride * 2 ** (k / scales_per_octave)``.

    With the RS-ATSS / RS-PAA values (base 4, 3 scales, strides 8..128) every location of the
    stride-8 level gets anchors of 32, 40.3 and 50.8 pixels (aspect ratio 1); :func:`grid_anchors`
    places them.
    """
    if scales_per_octave < 1:
        raise ConfigError(f"scales_per_octave must be >= 1, got {scales_per_octave!r}")
    return [tuple(float(octave_base_scale * s * 2 ** (k / scales_per_octave))
                  for k in range(scales_per_octave)) for s in strides]


def grid_anchors(shapes: list[tuple[int, int]], strides: list[int], sizes: list[tuple[float, ...]],
                 device: torch.device, aspect_ratios: tuple[float, ...] = (1.0,),
                 center_offset: float = 0.0) -> list[Tensor]:
    """Anchors per level, centred at ((x + offset)·stride, (y + offset)·stride), rows ordered y, x,
    anchor. A location's anchors are size-major: for each size s every ratio r = h / w gives
    w = s / √r, h = s·√r (ATSS/PAA: square anchors at offset 0; YOLACT: ratios 0.5, 1, 2 at offset 0.5).

    Written here rather than taken from torchvision's AnchorGenerator because that one infers the
    stride from the padded image size, which is not the network stride on P7 when the image is not
    a multiple of 128 (and it rounds anchor sizes to whole pixels)."""
    out = []
    roots = torch.tensor([float(r) for r in aspect_ratios], dtype=torch.float32, device=device).sqrt()
    for (h, w), stride, level_sizes in zip(shapes, strides, sizes):
        size = torch.tensor(level_sizes, dtype=torch.float32, device=device)
        half_w = (size[:, None] / roots[None] / 2).reshape(-1)
        half_h = (size[:, None] * roots[None] / 2).reshape(-1)
        base = torch.stack([-half_w, -half_h, half_w, half_h], dim=1)  # (A, 4)
        ys = (torch.arange(h, dtype=torch.float32, device=device) + center_offset) * stride
        xs = (torch.arange(w, dtype=torch.float32, device=device) + center_offset) * stride
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([x, y, x, y], dim=-1).reshape(-1, 1, 4)
        out.append((shifts + base[None]).reshape(-1, 4))
    return out
