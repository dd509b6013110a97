"""One-stage detectors on a dense anchor head: ATSS and PAA (docs/detectors.md, "ATSS and PAA").

Both use the same head (GN conv towers, a learnable scale per level, 3 anchors per location of
4·stride·2^(k/3), FPN P3-P7) and one loss-bearing stage, ``head``: every anchor × class enters the
classification loss (paper §4; supplementary Tables S1, S3, S4 are on RS-ATSS). They differ in the
assigner (ATSS: adaptive IoU threshold; PAA: max-IoU candidates re-assigned by a Gaussian mixture
over the anchors' own loss) and in test-time scoring (PAA votes boxes). The standard baselines add a
quality branch (ATSS: centerness, PAA: IoU prediction) that RS removes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from rsdet.errors import ConfigError
from rsdet.models.anchors import dense_anchor_sizes, grid_anchors
from rsdet.models.assign.atss import atss_assign_boxes_images, matched_boxes
from rsdet.models.assign.max_iou import MinIoUMatcher, max_iou_match_images
from rsdet.models.assign.paa import paa_anchor_scores, paa_reassign
from rsdet.models.backbone import build_backbone
from rsdet.models.criterion import stage_loss_config
from rsdet.models.detectors.base import Detector
from rsdet.models.heads.dense import DenseHead
from rsdet.models.registry import register
from rsdet.models.samplers import resolve_stage_sampler, sample_stage
from rsdet.models.stage import NEGATIVE, StageOutput, StageSpec
from rsdet.models.topk import top_k_per_level


class OneStageDetector(Detector):
    """Backbone (ResNet + FPN P3-P7) + ``DenseHead``; subclasses implement ``assign``."""

    aux_kind = "none"

    def __init__(self, cfg: Any, num_classes: int):
        det = cfg.detector
        spec = StageSpec("head", num_classes, iou_threshold=float(det.get("iou_threshold", 0.5)), dense=True)
        super().__init__(cfg, num_classes, [spec])
        self.spec = spec
        stage_loss_config(cfg.loss, spec)  # fail early, naming the valid losses, for softmax ones (loss=ce)
        head = det.head
        self.strides = [int(s) for s in head.strides]
        self.anchor_sizes = dense_anchor_sizes(self.strides, float(head.octave_base_scale),
                                               int(head.scales_per_octave))
        self.backbone = build_backbone(det.backbone)
        if len(self.strides) != len(det.backbone.returned_stages) + 2:
            raise ConfigError(f"detector.head.strides has {len(self.strides)} levels but the backbone gives "
                              f"{len(det.backbone.returned_stages) + 2} (returned_stages + P6, P7)")
        self.aux_kind = str(head.get("aux", "none") or "none")
        self.head = DenseHead(self.backbone.out_channels, int(head.scales_per_octave), num_classes, len(self.strides),
                              num_convs=int(head.num_convs), feat_channels=head.get("feat_channels"),
                              norm=str(head.norm), aux=self.aux_kind, prior_prob=float(head.prior_prob))
        self.box_coder = det_utils.BoxCoder(tuple(det.box_coder_weights), bbox_xform_clip=math.log(1000.0 / 16))
        self.sampler = resolve_stage_sampler(cfg.sampler, cfg.loss, "head")
        test = det.test
        self.pre_nms_top_n = int(test.pre_nms_top_n)
        self.nms_thresh = float(test.nms_thresh)
        self.detections_per_img = int(test.detections_per_img)
        self.score_voting = bool(test.get("score_voting", False))

    # ------------------------------------------------------------------ shared pieces
    def _predict(self, images, features):
        feats = list(features.values())
        cls, reg, aux = self.head(feats)
        shapes = [tuple(f.shape[-2:]) for f in feats]
        anchors = grid_anchors(shapes, self.strides, self.anchor_sizes, cls.device)
        return cls, reg, aux, anchors

    def assign(self, anchors: Tensor, per_level: list[int], target: dict, cls_logits: Tensor,
               deltas: Tensor) -> tuple[Tensor, Tensor]:
        """(classes, matched GT boxes) of one image's anchors (classes: >= 0 positive, -1 negative)."""
        raise NotImplementedError

    def assign_images(self, anchors: Tensor, per_level: list[int], targets: list[dict], cls: Tensor,
                      reg: Tensor) -> tuple[Tensor, Tensor]:
        """(classes, matched GT boxes) of every image's anchors, images one after the other ((B·N,)
        and (B·N, 4)); ``cls`` (B, N, C) and ``reg`` (B, N, 4) are the head's outputs. One ``assign``
        per image unless a subclass assigns the batch at once."""
        classes, gts = [], []
        for b, target in enumerate(targets):
            c, g = self.assign(anchors, per_level, target, cls[b], reg[b])
            classes.append(c)
            gts.append(g)
        return torch.cat(classes), torch.cat(gts)

    def stage_outputs(self, images, features, targets):
        cls, reg, aux, anchor_levels = self._predict(images, features)
        anchors = torch.cat(anchor_levels)
        per_level = [len(a) for a in anchor_levels]
        gt_classes, gt_boxes = self.assign_images(anchors, per_level, targets, cls, reg)
        num_images, n = cls.shape[:2]
        out = StageOutput(
            spec=self.spec,
            cls_logits=cls.reshape(-1, cls.shape[-1]),
            box_deltas=reg.reshape(-1, 4),
            ref_boxes=anchors.repeat(num_images, 1),
            gt_boxes=gt_boxes,
            gt_classes=gt_classes,
            box_coder=self.box_coder,
            image_index=torch.arange(num_images, device=cls.device).repeat_interleave(n),
            aux={} if aux is None else {self.aux_kind: aux.reshape(-1)},
        )
        return [sample_stage(out, self.sampler, num_images)]

    # ------------------------------------------------------------------ test
    def _scores(self, cls: Tensor, aux: Tensor | None) -> Tensor:
        scores = cls.sigmoid()
        if aux is None:
            return scores
        if self.aux_kind == "centerness":  # ATSS: class score × centerness
            return scores * aux.sigmoid()[:, None]
        return (scores * aux.sigmoid()[:, None]).sqrt()  # PAA: geometric mean with the predicted IoU

    @torch.no_grad()
    def detect(self, images, features):
        cls, reg, aux, anchor_levels = self._predict(images, features)
        per_level = [len(a) for a in anchor_levels]
        anchors = torch.cat(anchor_levels)
        results = []
        for b, size in enumerate(images.image_sizes):
            scores = self._scores(cls[b], None if aux is None else aux[b, :, 0])
            # per level: the top-k anchors by their best class score (docs/detectors.md, "Test")
            rows = top_k_per_level(scores, per_level, self.pre_nms_top_n)
            s = scores[rows]
            anchor_idx, labels = torch.nonzero(s > self.score_thresh, as_tuple=True)
            rows = rows[anchor_idx]
            s = s[anchor_idx, labels]
            boxes = clip_boxes_to_image(self.box_coder.decode_single(reg[b, rows], anchors[rows]), size)
            keep = remove_small_boxes(boxes, 1e-2)
            boxes, s, labels = boxes[keep], s[keep], labels[keep]
            keep = batched_nms(boxes, s, labels, self.nms_thresh)[: self.detections_per_img]
            kept_boxes = boxes[keep]
            if self.score_voting and len(keep):
                kept_boxes = score_voting(kept_boxes, labels[keep], boxes, s, labels)
            results.append({"boxes": kept_boxes, "scores": s[keep], "labels": labels[keep]})
        return results


def score_voting(kept: Tensor, kept_labels: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor,
                 sigma: float = 0.025) -> Tensor:
    """PAA's score voting: each kept box becomes the average of the same-class candidate boxes
    before NMS, weighted by score × exp(-(1 - IoU)² / σ) (Kim & Lee, ECCV 2020, §3.4)."""
    iou = box_iou(kept, boxes)
    weight = torch.exp(-((1 - iou) ** 2) / sigma) * scores[None]
    weight = weight * (kept_labels[:, None] == labels[None]) * (iou > 0)
    return (weight @ boxes) / weight.sum(dim=1, keepdim=True).clamp(min=1e-12)


@register("atss")
class ATSS(OneStageDetector):
    """ATSS (Zhang et al., CVPR 2020) — RS-ATSS without the centerness branch, the standard ATSS
    (``loss=focal``) with it."""

    def __init__(self, cfg: Any, num_classes: int):
        super().__init__(cfg, num_classes)
        self.topk = int(cfg.detector.assigner.topk)

    def assign(self, anchors, per_level, target, cls_logits, deltas):
        return self.assign_images(anchors, per_level, [target], cls_logits[None], deltas[None])

    def assign_images(self, anchors, per_level, targets, cls, reg):
        """The batch in one ATSS pass (:func:`atss_assign_images`; docs/performance.md)."""
        classes, boxes, _ = atss_assign_boxes_images(anchors, per_level, [t["boxes"] for t in targets],
                                                     [t["labels"] for t in targets], self.topk)
        return classes, boxes


@register("paa")
class PAA(OneStageDetector):
    """PAA (Kim & Lee, ECCV 2020): max-IoU candidates at 0.1, re-assigned per GT by a 2-component
    Gaussian mixture over the anchors' focal + GIoU scores; score voting at test."""

    def __init__(self, cfg: Any, num_classes: int):
        super().__init__(cfg, num_classes)
        a = cfg.detector.assigner
        self.topk = int(a.topk)
        self.candidate_matcher = MinIoUMatcher(float(a.candidate_iou), float(a.candidate_iou), min_pos_iou=0.0)
        self.score_box_weight = float(a.get("score_box_weight", 1.0))

    def assign(self, anchors, per_level, target, cls_logits, deltas):
        return self.assign_images(anchors, per_level, [target], cls_logits[None], deltas[None])

    def assign_images(self, anchors, per_level, targets, cls, reg):
        """The batch at once: max-IoU candidates per image, then one anchor score call and one
        :func:`paa_reassign` (one mixture fit) over every image's boxes. Each box's candidates lie in its
        own image, so this equals the image-by-image assignment (tests/models/test_one_stage.py); it saves
        one expectation-maximisation loop per image (docs/performance.md)."""
        num_images, n = cls.shape[:2]
        device = anchors.device
        gt = torch.cat([t["boxes"] for t in targets])
        labels = torch.cat([t["labels"] for t in targets])
        counts = [len(t["boxes"]) for t in targets]
        if not len(gt):
            return (torch.full((num_images * n,), NEGATIVE, dtype=torch.long, device=device),
                    anchors.new_zeros((num_images * n, 4)))
        index = max_iou_match_images(self.candidate_matcher, anchors, gt, counts)  # (B·N,) into gt, -1 elsewhere
        levels = torch.arange(len(per_level), device=device).repeat_interleave(
            torch.tensor(per_level, device=device)).repeat(num_images)
        cand = torch.nonzero(index >= 0).flatten()
        scores = torch.zeros(num_images * n, device=device)
        with torch.no_grad():
            pred = self.box_coder.decode_single(reg.reshape(-1, 4)[cand].detach(), anchors[cand % n])
            scores[cand] = paa_anchor_scores(cls.reshape(-1, cls.shape[-1])[cand].detach(), labels[index[cand]], pred,
                                             gt[index[cand]], box_weight=self.score_box_weight).float()
        matched = paa_reassign(index, scores, levels, len(gt), self.topk)
        classes = torch.where(matched >= 0, labels[matched.clamp(min=0)], torch.full_like(matched, NEGATIVE))
        return classes, matched_boxes(gt, matched, counts, n)
