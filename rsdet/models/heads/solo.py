"""SOLOv2's network pieces (Wang et al., NeurIPS 2020, §3; docs/detectors.md, "SOLOv2"): the kernel and
category branches shared by the pyramid levels, the unified mask-feature branch and the dynamic 1 × 1
convolution that turns a cell's kernel into its mask.

- ``coord_features``: two channels of normalised x and y in [-1, 1] (CoordConv), concatenated to a
  feature map so that a cell's kernel knows where it is.
- ``SoloKernelHead``: per level, the feature map plus its coordinates is resized (bilinear) to the
  level's G × G grid; the kernel branch (``num_convs`` 3 × 3 conv + GroupNorm + ReLU on the C + 2
  channels, then a 3 × 3 conv) predicts E kernel weights per cell, the category branch (the same
  tower on the C feature channels, then a 3 × 3 conv) one sigmoid logit per class and cell.
- ``MaskFeatureBranch``: FPN levels P2 ... P(1+L) each brought to P2's resolution (a quarter of the
  input) by k = level index repeats of 3 × 3 conv + GroupNorm + ReLU and × 2 bilinear upsampling
  (one conv for P2), the coordinates concatenated to the coarsest level's input; the sum passes a
  1 × 1 conv + GroupNorm + ReLU to the E mask-feature channels.
- ``dynamic_masks``: a cell's mask logits are its kernel (E,) times the image's mask features
  (E, h, w), a 1 × 1 convolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsdet.errors import ConfigError
from rsdet.models.heads.layers import conv_tower, group_norm_groups

__all__ = ["coord_features", "SoloKernelHead", "MaskFeatureBranch", "dynamic_masks"]


def coord_features(x: Tensor) -> Tensor:
    """(B, 2, H, W): normalised x (first channel) and y in [-1, 1] over the map of ``x`` (B, C, H, W)."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None].expand(b, 2, h, w)


def _normal_init(module: nn.Module, std: float = 0.01) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SoloKernelHead(nn.Module):
    """Kernel and category branches shared by the levels (module docstring). ``forward(features, grids)``
    takes one feature map per level (already at the level's stride) and returns per level the category
    logits (B, C, G, G) and the kernels (B, E, G, G)."""

    def __init__(self, in_channels: int, num_classes: int, kernel_channels: int, feat_channels: int = 256,
                 num_convs: int = 2, prior_prob: float = 0.01):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("kernel_channels", kernel_channels), ("feat_channels", feat_channels)):
            if int(value) < 1:
                raise ConfigError(f"SOLOv2 head {name} must be >= 1, got {value!r}")
        if int(num_convs) < 1:
            raise ConfigError(f"detector.head.num_convs must be >= 1, got {num_convs!r}")
        if not 0.0 < float(prior_prob) < 1.0:
            raise ConfigError(f"detector.head.prior_prob must be in (0, 1), got {prior_prob!r}")
        self.kernel_tower = conv_tower(in_channels + 2, feat_channels, num_convs, "gn")
        self.cls_tower = conv_tower(in_channels, feat_channels, num_convs, "gn")
        self.kernel_out = nn.Conv2d(feat_channels, kernel_channels, 3, padding=1)
        self.cls_out = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        _normal_init(self)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor], grids: Sequence[int]) -> tuple[list[Tensor], list[Tensor]]:
        cls, kernels = [], []
        for x, grid in zip(features, grids):
            x = torch.cat([x, coord_features(x)], 1)
            x = F.interpolate(x, size=(int(grid), int(grid)), mode="bilinear", align_corners=False)
            kernels.append(self.kernel_out(self.kernel_tower(x)))
            cls.append(self.cls_out(self.cls_tower(x[:, :-2].contiguous())))
        return cls, kernels


class MaskFeatureBranch(nn.Module):
    """SOLOv2's unified mask features (module docstring): ``num_levels`` FPN levels from P2, ``channels``
    wide inside, ``out_channels`` (E) out, at P2's resolution."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, num_levels: int = 4):
        super().__init__()
        if int(num_levels) < 1 or int(channels) < 1 or int(out_channels) < 1:
            raise ConfigError(f"detector.mask_feat: num_levels ({num_levels}), channels ({channels}) and "
                              f"out_channels ({out_channels}) must be >= 1")
        self.num_levels = int(num_levels)
        levels = []
        for i in range(self.num_levels):
            layers: list[nn.Module] = []
            for j in range(max(i, 1)):
                cin = (in_channels + (2 if i == self.num_levels - 1 and i > 0 else 0)) if j == 0 else channels
                layers.extend(conv_tower(cin, channels, 1, "gn"))
                if i > 0:
                    layers.append(nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False))
            levels.append(nn.Sequential(*layers))
        self.levels = nn.ModuleList(levels)
        self.out = nn.Sequential(nn.Conv2d(channels, out_channels, 1, bias=False),
                                 nn.GroupNorm(group_norm_groups(out_channels), out_channels), nn.ReLU(inplace=True))
        _normal_init(self)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) < self.num_levels:
            raise ConfigError(f"the mask-feature branch needs {self.num_levels} FPN levels, the backbone gives "
                              f"{len(features)}")
        total = None
        for i, branch in enumerate(self.levels):
            x = features[i]
            if i == self.num_levels - 1 and i > 0:
                x = torch.cat([x, coord_features(x)], 1)
            y = branch(x)
            if total is not None and y.shape[-2:] != total.shape[-2:]:  # odd sizes: bring to P2's
                y = F.interpolate(y, size=total.shape[-2:], mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        return self.out(total)


def dynamic_masks(features: Tensor, kernels: Tensor) -> Tensor:
    """Mask logits (P, h, w) of P kernels (P, E) on one image's mask features (E, h, w)."""
    e, h, w = features.shape
    return (kernels @ features.reshape(e, h * w)).reshape(-1, h, w)
