"""YOLACT's mask pieces: the prediction head, the protonet, mask assembly and cropping.

YOLACT (Bolya et al., ICCV 2019, §3) predicts k prototype masks once per image (the protonet on
P3) and, for every anchor, class scores, box deltas and k mask coefficients (tanh). The mask of an
anchor is sigmoid(prototypes · coefficients), cropped to a box: the matched ground-truth box in
training, the predicted box at test (docs/detectors.md, "YOLACT").

Conventions: prototypes are (B, k, h, w) at a quarter of the padded input size (P3 upsampled ×2);
boxes are cropped with :func:`rsdet.models.image_masks.box_region` in mask pixels.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsdet.errors import ConfigError
from rsdet.models.heads.layers import conv_tower, flatten_levels
from rsdet.models.image_masks import box_region
from rsdet.models.stage import MaskPrediction

__all__ = ["YolactHead", "ProtoNet", "assemble_logits", "assemble_masks", "gt_masks_at", "prototype_mask_prediction"]


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class YolactHead(nn.Module):
    """Shared across pyramid levels: ``num_convs`` 3×3 conv (+ GroupNorm with ``norm="gn"``) + ReLU,
    then three 3×3 convs to A·K class logits, A·4 box deltas and A·k mask coefficients (tanh);
    ``cls_convs`` more conv (+ norm) + ReLU blocks on the class branch only (0 in YOLACT).
    K = C (sigmoid, RS) or C + 1 (softmax with the background last, the standard YOLACT). Xavier init
    with zero biases as YOLACT; with ``prior_prob`` the classifier bias starts at -log((1 - p) / p)
    instead (sigmoid classifiers)."""

    def __init__(self, in_channels: int, num_anchors: int, num_cls_outputs: int, num_protos: int = 32,
                 num_convs: int = 1, feat_channels: int | None = None, prior_prob: float | None = None,
                 norm: str = "none", cls_convs: int = 0):
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("num_anchors", num_anchors, 1),
                                 ("num_cls_outputs", num_cls_outputs, 1), ("num_protos", num_protos, 1),
                                 ("num_convs", num_convs, 0)):
            if int(value) < low:
                raise ConfigError(f"YOLACT head {name} must be >= {low}, got {value!r}")
        if norm not in ("none", "gn"):
            raise ConfigError(f"detector.head.norm={norm!r} is not one of none, gn")
        feat = int(feat_channels or in_channels)
        self.tower = conv_tower(in_channels, feat, num_convs, norm)
        out_ch = feat if num_convs else in_channels
        self.cls_tower = conv_tower(out_ch, feat, int(cls_convs), norm)  # extra class-branch convs (0 in YOLACT)
        cls_ch = feat if cls_convs else out_ch
        self.num_anchors = num_anchors
        self.cls_out = nn.Conv2d(cls_ch, num_anchors * num_cls_outputs, 3, padding=1)
        self.reg_out = nn.Conv2d(out_ch, num_anchors * 4, 3, padding=1)
        self.coef_out = nn.Conv2d(out_ch, num_anchors * num_protos, 3, padding=1)
        _xavier(self)
        if prior_prob is not None:
            if not 0.0 < float(prior_prob) < 1.0:
                raise ConfigError(f"detector.head.prior_prob must be in (0, 1) or null, got {prior_prob!r}")
            nn.init.constant_(self.cls_out.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, K) logits, (B, N, 4) deltas, (B, N, k) coefficients in (-1, 1); rows level, y, x, anchor."""
        cls, reg, coef = [], [], []
        for f in features:
            t = self.tower(f)
            cls.append(self.cls_out(self.cls_tower(t)))
            reg.append(self.reg_out(t))
            coef.append(self.coef_out(t))
        a = self.num_anchors
        return flatten_levels(cls, a), flatten_levels(reg, a), flatten_levels(coef, a).tanh()


class ProtoNet(nn.Module):
    """YOLACT's protonet on P3: ``num_convs`` 3×3 conv + ReLU, ×2 bilinear upsampling, 3×3 conv + ReLU,
    1×1 conv to k prototypes and a final ReLU (kept, as in YOLACT). Output (B, k, 2H, 2W)."""

    def __init__(self, in_channels: int, channels: int = 256, num_protos: int = 32, num_convs: int = 3):
        super().__init__()
        if int(num_protos) < 1 or int(channels) < 1 or int(num_convs) < 0:
            raise ConfigError(f"detector.proto: channels ({channels}) and num_protos ({num_protos}) must be >= 1, "
                              f"num_convs ({num_convs}) >= 0")
        self.pre = conv_tower(in_channels, channels, num_convs)
        mid = channels if num_convs else in_channels
        self.post = nn.Sequential(nn.Conv2d(mid, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, num_protos, 1), nn.ReLU(inplace=True))
        _xavier(self)

    def forward(self, p3: Tensor) -> Tensor:
        x = self.pre(p3)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.post(x)


def assemble_logits(protos: Tensor, coeffs: Tensor) -> Tensor:
    """Σ_k protos[k] · coeffs[:, k]: one image's prototypes (k, h, w) and P coefficient vectors (P, k)
    -> (P, h, w) mask logits (YOLACT Eq. 1 before the sigmoid)."""
    if protos.dim() != 3 or coeffs.dim() != 2 or coeffs.shape[1] != protos.shape[0]:
        raise ConfigError(f"assemble_masks: prototypes (k, h, w) and coefficients (P, k) expected, got "
                          f"{tuple(protos.shape)} and {tuple(coeffs.shape)}")
    k, h, w = protos.shape
    return (coeffs @ protos.reshape(k, h * w)).reshape(-1, h, w)


def assemble_masks(protos: Tensor, coeffs: Tensor) -> Tensor:
    """sigmoid(Σ_k protos[k] · coeffs[:, k]): (P, h, w) mask probabilities (YOLACT Eq. 1)."""
    return torch.sigmoid(assemble_logits(protos, coeffs))


def gt_masks_at(masks: Tensor, padded_size: tuple[int, int], out_size: tuple[int, int]) -> Tensor:
    """One image's GT masks (n, h, w) at the resized image size -> (n, h', w') binary float at the
    prototype resolution: zero-padded to the padded batch size, bilinearly resized and thresholded
    at 0.5 (as RS-YOLACT prepares its mask targets)."""
    n = masks.shape[0]
    if n == 0:
        return masks.new_zeros((0, *out_size), dtype=torch.float32)
    h, w = masks.shape[-2:]
    full = masks.new_zeros((n, *padded_size), dtype=torch.float32)
    full[:, :h, :w] = masks.float()
    small = F.interpolate(full[None], size=out_size, mode="bilinear", align_corners=False)[0]
    return (small > 0.5).float()


def prototype_mask_prediction(protos: Tensor, coeffs: Tensor, image_index: Tensor, rows: Tensor,
                              gt_masks: Tensor, gt_index: Tensor, crop_boxes: Tensor,
                              padding: float = 1.0) -> MaskPrediction:
    """YOLACT's ``MaskPrediction`` of a head stage's positive rows ``rows`` (ascending).

    ``protos`` (B, k, h, w); per stage row: ``coeffs`` (M, k), ``image_index`` (M,), ``gt_index`` (M,)
    into ``gt_masks`` (G, h, w) (-1: none), ``crop_boxes`` (M, 4) the matched GT box in prototype
    pixels. Each row's mask logits are its image's prototypes times its coefficients; its ``crop`` is
    the GT box grown by ``padding`` prototype pixels (YOLACT crops to it) and its target the matched
    GT mask, both on the whole image at prototype resolution. Every row is its own weight row."""
    h, w = protos.shape[-2:]
    images = image_index[rows]
    logits = protos.new_zeros((len(rows), h, w))
    for b in torch.unique(images).tolist():
        idx = torch.nonzero(images == b).flatten()
        logits = logits.index_put((idx,), assemble_logits(protos[b], coeffs[rows[idx]]))
    if not len(rows):  # keep a graph to the coefficients for the zero loss of a batch without positives
        logits = logits + coeffs[rows].sum() * 0.0
    index = gt_index[rows]
    if bool((index < 0).any()):
        raise ConfigError("prototype_mask_prediction: a positive row has no matched ground-truth mask")
    crop = box_region(crop_boxes[rows], h, w, padding).to(logits.dtype)
    return MaskPrediction(logits=logits, targets=gt_masks[index].to(logits.dtype), rows=rows, weight_rows=rows,
                          crop=crop)
