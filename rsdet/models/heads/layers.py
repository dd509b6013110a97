"""Building blocks shared by the dense heads (ATSS/PAA's ``DenseHead``, YOLACT's head and protonet,
Mask R-CNN's mask FCN): the conv tower, the GroupNorm group count, the per-level scale and the
flattening of per-level maps into rows (docs/detectors.md, "The model layer")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rsdet.errors import ConfigError

__all__ = ["NORMS", "GN_GROUPS", "conv_tower", "group_norm_groups", "Scale", "flatten_levels"]

NORMS = ("gn", "none")
GN_GROUPS = 32


def group_norm_groups(channels: int, groups: int = GN_GROUPS) -> int:
    """Number of GroupNorm groups: 32, or gcd(32, channels) when 32 does not divide ``channels``
    (16 channels -> 16 groups, 24 -> 8), so narrow CPU-sized heads still normalise."""
    return math.gcd(groups, channels)


def conv_tower(in_channels: int, channels: int, num_convs: int, norm: str = "none") -> nn.Sequential:
    """``num_convs`` blocks of 3×3 conv (padding 1) + optional GroupNorm (``norm="gn"``) + ReLU; the
    first conv takes ``in_channels``, every conv outputs ``channels``. A conv followed by GroupNorm has
    no bias (the norm's shift replaces it). ``num_convs=0`` is the identity (an empty Sequential)."""
    if norm not in NORMS:
        raise ConfigError(f"conv tower norm={norm!r} is not one of {NORMS}")
    layers: list[nn.Module] = []
    for i in range(int(num_convs)):
        layers.append(nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=norm == "none"))
        if norm == "gn":
            layers.append(nn.GroupNorm(group_norm_groups(channels), channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Scale(nn.Module):
    """Multiply the input by one learnable scalar (initialised to ``init``)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def flatten_levels(outputs: Sequence[Tensor], num_anchors: int) -> Tensor:
    """Turn per-level maps (B, A*K, H, W) into one (B, sum over levels of H*W*A, K) tensor.

    Channel ``a * K + k`` of a map is value ``k`` of anchor ``a``; rows come out level by level,
    then by y, x and anchor, matching torchvision's ``AnchorGenerator`` and
    :func:`rsdet.models.anchors.grid_anchors`.
    """
    flat = []
    for out in outputs:
        b, ak, h, w = out.shape
        k = ak // num_anchors
        flat.append(out.reshape(b, num_anchors, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k))
    return torch.cat(flat, dim=1)
