"""Dense (one-stage) anchor head shared by ATSS and PAA.

The head is the RetinaNet-style head of ATSS (Zhang et al., CVPR 2020) and PAA (Kim & Lee,
ECCV 2020): one tower of ``num_convs`` 3x3 conv + norm + ReLU for classification, another for
regression, a 3x3 classifier conv to A*C sigmoid logits, a 3x3 regression conv to A*4 box deltas
multiplied by a learnable scalar per pyramid level, and optionally one more 3x3 conv on the
regression tower to A*1 outputs (centerness for the ATSS baseline, IoU prediction for the PAA
baseline; the RS variants drop it). Outputs are flattened in the order torchvision's
``AnchorGenerator`` lays out anchors: level, then row (y), then column (x), then anchor. The anchors
are in ``rsdet.models.anchors``, the tower and the flattening in ``rsdet.models.heads.layers``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from rsdet.errors import ConfigError
from rsdet.models.heads.layers import NORMS, Scale, conv_tower, flatten_levels

__all__ = ["DenseHead", "AUX_OUTPUTS"]

AUX_OUTPUTS = ("none", "centerness", "iou")


class DenseHead(nn.Module):
    """Classification + box-regression head for ATSS / PAA (shared across pyramid levels).

    Args:
        in_channels: channels of every input feature map (FPN output width).
        num_anchors: anchors per location A.
        num_classes: classes C (sigmoid classifier, no background logit).
        num_levels: number of pyramid levels (one learnable regression Scale each).
        num_convs: conv + norm + ReLU blocks per tower (4 in ATSS/PAA; 0 allowed).
        feat_channels: tower width (default: ``in_channels``).
        norm: ``"gn"`` (GroupNorm, see :func:`rsdet.models.heads.layers.group_norm_groups`) or ``"none"``.
        aux: ``"none"``, ``"centerness"`` or ``"iou"``: an extra A*1 conv on the regression tower.
        prior_prob: initial foreground probability of the classifier (bias -log((1-p)/p)).

    Init: every conv weight N(0, 0.01), biases 0, classifier bias -log((1 - p) / p) (-4.595 at
    p = 0.01), GroupNorm weight 1 / bias 0, Scales 1.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_levels: int,
                 num_convs: int = 4, feat_channels: int | None = None, norm: str = "gn",
                 aux: str = "none", prior_prob: float = 0.01):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"dense head norm={norm!r} is not one of {NORMS}")
        if aux not in AUX_OUTPUTS:
            raise ConfigError(f"dense head aux={aux!r} is not one of {AUX_OUTPUTS}")
        if not 0.0 < prior_prob < 1.0:
            raise ConfigError(f"dense head prior_prob must be in (0, 1), got {prior_prob!r}")
        for name, value, low in (("in_channels", in_channels, 1), ("num_anchors", num_anchors, 1),
                                 ("num_classes", num_classes, 1), ("num_levels", num_levels, 1),
                                 ("num_convs", num_convs, 0)):
            if int(value) < low:
                raise ConfigError(f"dense head {name} must be >= {low}, got {value!r}")
        feat_channels = int(feat_channels or in_channels)
        tower_out = feat_channels if num_convs > 0 else in_channels
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.num_levels = num_levels
        self.aux_kind = aux

        self.cls_tower = conv_tower(in_channels, feat_channels, num_convs, norm)
        self.reg_tower = conv_tower(in_channels, feat_channels, num_convs, norm)
        self.cls_out = nn.Conv2d(tower_out, num_anchors * num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(tower_out, num_anchors * 4, 3, padding=1)
        self.aux_out = (nn.Conv2d(tower_out, num_anchors, 3, padding=1) if aux != "none"
                        else None)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """``features``: one (B, in_channels, H_l, W_l) map per level, finest first.

        Returns ``(cls, reg, aux)``: (B, N, C) logits, (B, N, 4) scaled box deltas and (B, N, 1)
        auxiliary logits (``None`` when ``aux="none"``), N = sum over levels of H_l * W_l * A,
        rows in torchvision ``AnchorGenerator`` order.
        """
        if len(features) != self.num_levels:
            raise ConfigError(
                f"dense head built for {self.num_levels} levels got {len(features)} feature "
                "maps; set num_levels to the number of FPN outputs")
        cls_maps, reg_maps, aux_maps = [], [], []
        for feature, scale in zip(features, self.scales):
            cls_feat = self.cls_tower(feature)
            reg_feat = self.reg_tower(feature)
            cls_maps.append(self.cls_out(cls_feat))
            reg_maps.append(scale(self.reg_out(reg_feat)))
            if self.aux_out is not None:
                aux_maps.append(self.aux_out(reg_feat))
        cls = flatten_levels(cls_maps, self.num_anchors)
        reg = flatten_levels(reg_maps, self.num_anchors)
        aux = flatten_levels(aux_maps, self.num_anchors) if self.aux_out is not None else None
        return cls, reg, aux
