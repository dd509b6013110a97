"""Mask R-CNN's mask branch: RoIAlign 14 x 14, a 4-conv FCN, a 2x deconvolution to 28 x 28 and one
mask logit map per class (He et al., ICCV 2017; docs/detectors.md, "Mask R-CNN").

The head only predicts. ``mask_targets`` crops each positive's ground-truth mask to its RoI
(RoIAlign of the binary mask, then >= 0.5), ``cap_positive_rows`` draws at most ``max_rois``
positives of a batch for the branch (the RS recipe trains it on 200), and ``MaskBranch.train_step``
packs both into the ``MaskPrediction`` the criterion turns into the mask loss (Dice or BCE). At test
the branch predicts the mask of each detection at its class; ``GeneralizedRCNNTransform.postprocess``
pastes those 28 x 28 probabilities into the original image frame.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign, roi_align

from rsdet.errors import ConfigError
from rsdet.models.criterion import MASK_LABEL_KINDS
from rsdet.models.heads.layers import conv_tower
from rsdet.models.stage import MaskPrediction


class MaskHead(nn.Module):
    """RoI features -> (R, C, 2P, 2P) mask logits: ``num_convs`` 3 x 3 conv + ReLU layers of ``dim``
    channels on P x P RoIAlign features, a stride-2 transposed conv + ReLU, a 1 x 1 conv to C maps."""

    def __init__(self, in_channels: int, num_classes: int, dim: int = 256, num_convs: int = 4):
        super().__init__()
        self.fcn = conv_tower(in_channels, dim, int(num_convs))
        channels = dim if int(num_convs) else in_channels
        self.upsample = nn.ConvTranspose2d(channels, dim, 2, stride=2)
        self.predictor = nn.Conv2d(dim, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictor(torch.relu(self.upsample(self.fcn(x))))


def mask_targets(gt_masks: list[Tensor], boxes: Tensor, gt_index: Tensor, image_index: Tensor,
                 size: int) -> Tensor:
    """(Q, size, size) binary targets: the matched ground-truth mask of each RoI, RoIAligned to the
    RoI (one sample per bin centre, pixel-aligned) and thresholded at 0.5.

    ``gt_masks`` holds one (n_i, H, W) mask tensor per image (the resized-image frame of ``boxes``),
    ``gt_index`` (Q,) the matched ground truth of each RoI within its image ``image_index`` (Q,)."""
    out = boxes.new_zeros((len(boxes), size, size))
    for i, masks in enumerate(gt_masks):
        rows = torch.nonzero(image_index == i).flatten()
        if rows.numel() == 0:
            continue
        rois = torch.cat([gt_index[rows, None].to(boxes.dtype), boxes[rows]], dim=1)
        crops = roi_align(masks[:, None].to(boxes.dtype), rois, (size, size), spatial_scale=1.0, sampling_ratio=1,
                          aligned=True)
        out[rows] = (crops[:, 0] >= 0.5).to(boxes.dtype)
    return out


def cap_positive_rows(classes: Tensor, max_rois: int | None, generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
    """The positive rows (``classes`` >= 0) that train the mask branch: all of them, or ``max_rois`` drawn
    at random when there are more. Returns ``(rows, drawn)``: ``rows`` ascending (image by image, as
    the official head regroups its sample), ``drawn`` the same rows in the order they were drawn."""
    pos = torch.nonzero(classes >= 0).flatten()
    if max_rois is None or pos.numel() <= int(max_rois):
        return pos, pos
    drawn = pos[torch.randperm(pos.numel(), device=pos.device, generator=generator)[: int(max_rois)]]
    return drawn.sort().values, drawn


class MaskBranch(nn.Module):
    """The mask branch of one R-CNN stage: its own RoIAlign, the ``MaskHead`` and the training-step
    bookkeeping (targets, the positive cap, Dice labels). ``cfg`` is ``detector.mask``."""

    def __init__(self, cfg: Any, in_channels: int, num_classes: int, featmap_names: list[str],
                 label_kind: str = "binary"):
        super().__init__()
        pool = int(cfg.get("pool_size", 14))
        self.resolution = 2 * pool
        self.roi_align = MultiScaleRoIAlign(featmap_names, pool, sampling_ratio=int(cfg.get("sampling_ratio", 2)))
        self.head = MaskHead(in_channels, num_classes, int(cfg.get("conv_dim", 256)), int(cfg.get("num_convs", 4)))
        max_rois = cfg.get("max_rois")
        if max_rois is not None and int(max_rois) < 1:
            raise ConfigError(f"detector.mask.max_rois={max_rois} must be a positive number of RoIs or null (no cap)")
        self.max_rois = None if max_rois is None else int(max_rois)
        self.official_weight_order = bool(cfg.get("official_weight_order", False))
        self.needs_label_masks = label_kind in MASK_LABEL_KINDS

    def predict(self, features, boxes: list[Tensor], image_sizes, classes: Tensor) -> Tensor:
        """(R, S, S) mask logits of the boxes (one tensor per image, concatenated) at ``classes`` (R,)."""
        if sum(len(b) for b in boxes) == 0:
            return features[next(iter(features))].new_zeros((0, self.resolution, self.resolution))
        logits = self.head(self.roi_align(features, boxes, image_sizes))
        return logits[torch.arange(len(classes), device=classes.device), classes]

    def train_step(self, features, image_sizes, targets: list[dict], boxes: Tensor, classes: Tensor,
                   gt_index: Tensor, image_index: Tensor) -> MaskPrediction:
        """Predictions and targets for the rows of an R-CNN stage (``boxes``, assigned ``classes``,
        matched ``gt_index`` within the image, ``image_index``; rows image by image)."""
        if any("masks" not in t for t in targets):
            raise ConfigError("the mask branch needs instance masks in the targets: set dataset.with_masks=true "
                              "(the default for mask detectors)")
        gt_masks = [t["masks"] for t in targets]
        num_images = len(targets)
        rows, drawn = cap_positive_rows(classes, self.max_rois)
        logits = self.predict(features, _per_image(boxes[rows], image_index[rows], num_images), image_sizes,
                              classes[rows])
        tgt = mask_targets(gt_masks, boxes[rows], gt_index[rows], image_index[rows], self.resolution)
        weight_rows = drawn if self.official_weight_order else rows
        label_probs = label_targets = None
        if self.needs_label_masks:
            label_probs, label_targets = self._label_masks(features, image_sizes, gt_masks, boxes, classes,
                                                           gt_index, image_index, rows, logits, tgt)
        return MaskPrediction(logits=logits, targets=tgt, rows=rows, weight_rows=weight_rows,
                              label_probs=label_probs, label_targets=label_targets)

    @torch.no_grad()
    def _label_masks(self, features, image_sizes, gt_masks, boxes, classes, gt_index, image_index, rows, logits,
                     tgt) -> tuple[Tensor, Tensor]:
        """Detached probabilities and targets of every positive row (the rows beyond the cap are
        predicted here without gradient), zeros for the other rows."""
        s = self.resolution
        probs = boxes.new_zeros((len(boxes), s, s))
        targets = boxes.new_zeros((len(boxes), s, s))
        probs[rows] = logits.detach().sigmoid().to(probs.dtype)
        targets[rows] = tgt
        rest = torch.nonzero(classes >= 0).flatten()
        rest = rest[~torch.isin(rest, rows)]
        if rest.numel():
            n = len(gt_masks)
            probs[rest] = self.predict(features, _per_image(boxes[rest], image_index[rest], n), image_sizes,
                                       classes[rest]).sigmoid().to(probs.dtype)
            targets[rest] = mask_targets(gt_masks, boxes[rest], gt_index[rest], image_index[rest], s)
        return probs, targets

    @torch.no_grad()
    def forward_test(self, features, detections: list[dict], image_sizes) -> list[dict]:
        """Adds ``masks`` (n, 1, S, S) probabilities at each detection's label to every detection dict."""
        boxes = [d["boxes"] for d in detections]
        labels = torch.cat([d["labels"] for d in detections]) if detections else None
        if labels is None or labels.numel() == 0:
            for d in detections:
                d["masks"] = d["boxes"].new_zeros((0, 1, self.resolution, self.resolution))
            return detections
        probs = self.predict(features, boxes, image_sizes, labels).sigmoid()
        for d, p in zip(detections, probs.split([len(b) for b in boxes])):
            d["masks"] = p[:, None]
        return detections


def _per_image(boxes: Tensor, image_index: Tensor, num_images: int) -> list[Tensor]:
    return [boxes[image_index == i] for i in range(num_images)]
