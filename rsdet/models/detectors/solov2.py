"""SOLOv2 (Wang et al., NeurIPS 2020) and RS-SOLOv2 (paper §4, supplementary Tables S6 and S9).

A box-less, mask-only one-stage detector: each pyramid level splits the input into a G × G grid and
every cell predicts one sigmoid score per class (category branch) and the weights of a 1 × 1 kernel
(kernel branch, with CoordConv); a cell's mask is its kernel applied to the unified mask features at
a quarter of the input (``rsdet.models.heads.solo``). Cells are assigned by the centre of mass of
each instance's mask (``rsdet.models.solo_assign``). One loss-bearing stage, ``head``, declared
``StageSpec(dense=True, masks=True, boxes=False)``: every cell × class enters the classification
loss (RS: with Dice labels, the detached Dice of each positive's predicted mask; standard: focal),
each positive cell's mask the Dice mask loss (RS: weighted by the cell's detached best class score,
value self-balanced; standard: mean × 3). Test: 2 × 2 peak selection, mask scoring, Matrix NMS
(``rsdet.models.matrix_nms``); boxes for box AP come from the masks' extents.
docs/detectors.md, "SOLOv2".
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rsdet.errors import ConfigError, DataError
from rsdet.models.backbone import build_backbone
from rsdet.models.detectors.base import Detector
from rsdet.models.heads.protonet import gt_masks_at
from rsdet.models.heads.solo import MaskFeatureBranch, SoloKernelHead, dynamic_masks
from rsdet.models.matrix_nms import MATRIX_NMS_KERNELS, matrix_nms
from rsdet.models.registry import register
from rsdet.models.samplers import resolve_stage_sampler, sample_stage
from rsdet.models.solo_assign import solo_assign
from rsdet.models.stage import MaskPrediction, StageOutput, StageSpec

__all__ = ["SOLOv2", "peak_points", "boxes_from_masks"]

#: candidates whose masks are computed at once at test time (bounds the memory of a low score threshold)
_TEST_CHUNK = 2048


def peak_points(probs: Tensor) -> Tensor:
    """SOLOv2's point NMS: ``probs`` (B, C, G, G) with every cell that is not the maximum of the 2 × 2
    window ending at it (max-pool, stride 1, padded by one) set to 0."""
    pooled = F.max_pool2d(probs, 2, stride=1, padding=1)[..., :-1, :-1]
    return probs * (pooled == probs).to(probs.dtype)


def boxes_from_masks(masks: Tensor) -> Tensor:
    """(n, 4) x1, y1, x2, y2 of the extents of binary masks (n, h, w) in pixels (a pixel (i, j) covers
    [j, j + 1) × [i, i + 1)); an empty mask gives (0, 0, 0, 0)."""
    n = masks.shape[0]
    if n == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    rows, cols = masks.any(2), masks.any(1)
    h, w = masks.shape[-2:]
    ys = torch.arange(h, device=masks.device, dtype=torch.float32)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32)
    big = float(max(h, w)) + 1.0
    x1 = torch.where(cols, xs, torch.full_like(xs, big)).min(1).values
    x2 = torch.where(cols, xs + 1, torch.zeros_like(xs)).max(1).values
    y1 = torch.where(rows, ys, torch.full_like(ys, big)).min(1).values
    y2 = torch.where(rows, ys + 1, torch.zeros_like(ys)).max(1).values
    boxes = torch.stack([x1, y1, x2, y2], 1)
    return torch.where(cols.any(1)[:, None], boxes, torch.zeros_like(boxes))


def _pairs(value, name: str) -> list[tuple[float, float]]:
    try:
        out = [(float(lo), float(hi)) for lo, hi in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of [lower, upper] scale ranges, got {value!r}") from None
    if any(lo > hi for lo, hi in out):
        raise ConfigError(f"{name}: every range needs lower <= upper, got {value!r}")
    return out


@register("solov2")
@register("solov2_light")
@register("solov2_r101")
class SOLOv2(Detector):
    """SOLOv2 with a class-wise sigmoid category branch (RS, AP or focal loss; docs/detectors.md).
    ``solov2_light`` (Table S9's row) and ``solov2_r101`` are the same class with the official configs'
    sizes (conf/detector/)."""

    predicts_masks = True

    def __init__(self, cfg: Any, num_classes: int):
        det = cfg.detector
        spec = StageSpec("head", num_classes, dense=True, masks=True, boxes=False)
        super().__init__(cfg, num_classes, [spec])
        self.spec = spec
        head = det.head
        self.strides = [int(s) for s in head.strides]
        self.grids = [int(g) for g in head.grids]
        self.scale_ranges = _pairs(head.scale_ranges, "detector.head.scale_ranges")
        levels = head.get("feature_levels")
        self.feature_levels = list(range(len(self.grids))) if levels is None else [int(i) for i in levels]
        if not (len(self.strides) == len(self.grids) == len(self.scale_ranges) == len(self.feature_levels)):
            raise ConfigError(
                f"detector.head: strides ({len(self.strides)}), grids ({len(self.grids)}), scale_ranges "
                f"({len(self.scale_ranges)}) and feature_levels ({len(self.feature_levels)}) need one entry per "
                "level")
        self.sigma = float(head.sigma)
        if not 0.0 < self.sigma <= 1.0:
            raise ConfigError(f"detector.head.sigma={self.sigma} must be in (0, 1] (the centre region's share of "
                              "the box)")
        back = det.backbone
        if back.get("extra_levels", "maxpool") != "maxpool" or list(back.returned_stages)[:1] != [1]:
            raise ConfigError("detector=solov2 needs FPN P2-P6: detector.backbone.returned_stages starting at 1 "
                              "(C2) and detector.backbone.extra_levels=maxpool")
        self.backbone = build_backbone(back)
        num_fpn = len(back.returned_stages) + 1
        bad = [i for i in self.feature_levels if not 0 <= i < num_fpn]
        if bad:
            raise ConfigError(f"detector.head.feature_levels {bad} are not FPN outputs (0 = P2 ... {num_fpn - 1})")
        channels = self.backbone.out_channels
        self.kernel_channels = int(head.kernel_channels)
        self.head = SoloKernelHead(channels, num_classes, self.kernel_channels,
                                   feat_channels=int(head.feat_channels), num_convs=int(head.num_convs),
                                   prior_prob=float(head.prior_prob))
        mf = det.mask_feat
        if int(mf.num_levels) > len(back.returned_stages):
            raise ConfigError(f"detector.mask_feat.num_levels={mf.num_levels} exceeds the FPN levels P2... of "
                              f"detector.backbone.returned_stages ({len(back.returned_stages)})")
        self.mask_feat = MaskFeatureBranch(channels, int(mf.channels), self.kernel_channels, int(mf.num_levels))
        self.sampler = resolve_stage_sampler(cfg.sampler, cfg.loss, "head")
        test = det.test
        if str(test.kernel) not in MATRIX_NMS_KERNELS:
            raise ConfigError(f"detector.test.kernel={test.kernel!r} is not one of {', '.join(MATRIX_NMS_KERNELS)}")
        self.nms_kernel = str(test.kernel)
        self.nms_sigma = float(test.sigma)
        self.nms_pre = int(test.nms_pre)
        self.mask_thresh = float(test.mask_thresh)
        self.update_thresh = float(test.update_thresh)
        self.detections_per_img = int(test.detections_per_img)
        sizes = det.get("train_min_sizes")
        # multi-scale training (the paper's 3x recipe): one short side per image from this list; test at min_size
        self.train_min_sizes = tuple(int(s) for s in sizes) if sizes else None
        self.test_min_size = self.transform.min_size

    def forward(self, images, targets=None):
        if self.train_min_sizes is not None:
            self.transform.min_size = self.train_min_sizes if self.training else self.test_min_size
        return super().forward(images, targets)

    # ------------------------------------------------------------------ shared pieces
    def _predict(self, features: dict[str, Tensor], padded: tuple[int, int]):
        fpn = list(features.values())
        levels = []
        for i, stride in zip(self.feature_levels, self.strides):
            x = fpn[i]
            size = (-(-padded[0] // stride), -(-padded[1] // stride))
            if tuple(x.shape[-2:]) != size:  # P2 at stride 8, P6 at P5's size (SOLOv2's level strides)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            levels.append(x)
        cls, kernels = self.head(levels, self.grids)
        mask_feat = self.mask_feat(fpn)
        b = mask_feat.shape[0]
        # rows: image, then level, then cell in raster order
        cls = torch.cat([c.permute(0, 2, 3, 1).reshape(b, -1, c.shape[1]) for c in cls], 1)
        kernels = torch.cat([k.permute(0, 2, 3, 1).reshape(b, -1, k.shape[1]) for k in kernels], 1)
        return cls, kernels, mask_feat

    def _level_strides(self, device) -> Tensor:
        return torch.cat([torch.full((g * g,), float(s), device=device) for g, s in zip(self.grids, self.strides)])

    # ------------------------------------------------------------------ training
    def assign(self, target: dict, padded: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(classes, instance) of every cell of one image, levels concatenated (``solo_assign``)."""
        levels = solo_assign(target["boxes"], target["labels"], target["masks"], padded, self.grids,
                             self.scale_ranges, self.sigma)
        return torch.cat([c for c, _ in levels]), torch.cat([o for _, o in levels])

    def stage_outputs(self, images, features, targets):
        padded = tuple(images.tensors.shape[-2:])
        cls, kernels, mask_feat = self._predict(features, padded)
        if any("masks" not in target for target in targets):
            raise DataError("detector=solov2 trains on instance masks, but the training targets have none; "
                            "set dataset.with_masks=true (a dataset with segmentations)")
        num_images, n = cls.shape[:2]
        feat_size = tuple(mask_feat.shape[-2:])
        classes, owners, gt_masks, offset = [], [], [], 0
        for target in targets:
            c, o = self.assign(target, padded)
            classes.append(c)
            owners.append(torch.where(o >= 0, o + offset, o))
            offset += len(target["labels"])
            gt_masks.append(gt_masks_at(target["masks"], padded, feat_size))
        gt_classes, owner = torch.cat(classes), torch.cat(owners)
        kernels = kernels.reshape(num_images * n, -1)
        image_index = torch.arange(num_images, device=cls.device).repeat_interleave(n)
        masks = self._mask_prediction(mask_feat, kernels, image_index, gt_classes, owner,
                                      torch.cat(gt_masks).to(mask_feat.dtype))
        out = StageOutput(spec=self.spec, cls_logits=cls.reshape(num_images * n, -1), gt_classes=gt_classes,
                          image_index=image_index, masks=masks)
        return [sample_stage(out, self.sampler, num_images)]

    @staticmethod
    def _mask_prediction(mask_feat: Tensor, kernels: Tensor, image_index: Tensor, gt_classes: Tensor,
                         owner: Tensor, gt_masks: Tensor) -> MaskPrediction:
        """Every positive cell's mask logits and its instance's GT mask, in the stage's row order: mask k
        belongs to the k-th positive row, so its Dice label and its score weight are that row's (the
        official head pairs the Dice values of grid order with the positives of raster order;
        docs/detectors.md, "SOLOv2")."""
        rows = torch.nonzero(gt_classes >= 0).flatten()
        h, w = mask_feat.shape[-2:]
        logits = mask_feat.new_zeros((len(rows), h, w))
        images = image_index[rows]
        for b in torch.unique(images).tolist():
            idx = torch.nonzero(images == b).flatten()
            logits = logits.index_put((idx,), dynamic_masks(mask_feat[b], kernels[rows[idx]]))
        if not len(rows):  # keep a graph for the zero loss of a batch without positives
            logits = logits + kernels[:0].sum() * 0.0 + mask_feat.sum() * 0.0
        return MaskPrediction(logits=logits, targets=gt_masks[owner[rows]], rows=rows, weight_rows=rows)

    # ------------------------------------------------------------------ test
    @torch.no_grad()
    def detect(self, images, features):
        """Detections in the resized frame: ``image_masks`` (n, h, w) probabilities at the mask-feature
        resolution over the padded input, ``boxes`` from the binary masks' extents, ``scores`` the
        category score × the mask score after Matrix NMS, ``labels`` (docs/detectors.md, "SOLOv2")."""
        padded = tuple(images.tensors.shape[-2:])
        cls, kernels, mask_feat = self._predict(features, padded)
        b, n, c = cls.shape
        probs, start = [], 0
        for g in self.grids:  # 2 x 2 peak selection on each level's category maps
            level = cls[:, start:start + g * g].sigmoid().reshape(b, g, g, c).permute(0, 3, 1, 2)
            probs.append(peak_points(level).permute(0, 2, 3, 1).reshape(b, g * g, c))
            start += g * g
        scores = torch.cat(probs, 1)
        strides = self._level_strides(cls.device)
        return [self._detect_image(scores[i], kernels[i], mask_feat[i], strides, padded, size)
                for i, size in enumerate(images.image_sizes)]

    def _detect_image(self, scores: Tensor, kernels: Tensor, feat: Tensor, strides: Tensor,
                      padded: tuple[int, int], size) -> dict:
        h, w = feat.shape[-2:]
        rows, labels = torch.nonzero(scores > self.score_thresh, as_tuple=True)
        cand = scores[rows, labels]
        keep_rows, keep_scores, keep_labels, keep_masks, keep_areas = [], [], [], [], []
        for s in range(0, len(rows), _TEST_CHUNK):  # masks, small-mask filter and mask scoring
            r = rows[s:s + _TEST_CHUNK]
            p = dynamic_masks(feat, kernels[r]).sigmoid()
            binary = p > self.mask_thresh
            area = binary.flatten(1).sum(1).to(p.dtype)
            keep = area > strides[r]  # masks no larger than the level's stride (in mask pixels) are dropped
            mask_score = (p * binary).flatten(1).sum(1) / area.clamp(min=1.0)
            keep_rows.append(r[keep])
            keep_scores.append((cand[s:s + _TEST_CHUNK] * mask_score)[keep])
            keep_labels.append(labels[s:s + _TEST_CHUNK][keep])
            keep_masks.append(binary[keep])
            keep_areas.append(area[keep])
        if not keep_rows:
            return self._empty(h, w, feat)
        rows, score, labels = torch.cat(keep_rows), torch.cat(keep_scores), torch.cat(keep_labels)
        binary, area = torch.cat(keep_masks), torch.cat(keep_areas)
        order = score.argsort(descending=True)[: self.nms_pre]
        rows, score, labels, binary, area = rows[order], score[order], labels[order], binary[order], area[order]
        score = matrix_nms(binary, labels, score, sigma=self.nms_sigma, kernel=self.nms_kernel, areas=area)
        keep = torch.nonzero(score >= self.update_thresh).flatten()
        keep = keep[score[keep].argsort(descending=True)][: self.detections_per_img]
        rows, score, labels = rows[keep], score[keep], labels[keep]
        probs = dynamic_masks(feat, kernels[rows]).sigmoid()
        return {"boxes": self._mask_boxes(probs, padded, size), "scores": score, "labels": labels,
                "image_masks": probs}

    def _mask_boxes(self, probs: Tensor, padded: tuple[int, int], size) -> Tensor:
        """Boxes (resized frame) of the masks brought to the padded input (bilinear), cut to the image and
        binarised at the mask threshold, as the evaluated masks are."""
        if probs.shape[0] == 0:
            return probs.new_zeros((0, 4))
        full = F.interpolate(probs[None], size=padded, mode="bilinear", align_corners=False)[0]
        return boxes_from_masks(full[:, : int(size[0]), : int(size[1])] > self.mask_thresh).to(probs.dtype)

    @staticmethod
    def _empty(h: int, w: int, like: Tensor) -> dict:
        return {"boxes": like.new_zeros((0, 4)), "scores": like.new_zeros((0,)),
                "labels": torch.zeros(0, dtype=torch.long, device=like.device),
                "image_masks": like.new_zeros((0, h, w))}
