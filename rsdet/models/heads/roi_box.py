"""R-CNN box head: RoIAlign + two shared FC layers + class and box predictors (docs/detectors.md).

With a sigmoid classifier (RS, AP, aLRP, focal) the head has C logits and no background; with a
softmax classifier (cross-entropy) it has C + 1 logits with background *last*, so class indices mean
the same thing in both. Box regression is class-specific (4C outputs) for Faster R-CNN and
class-agnostic (4 outputs) for the stages of Cascade R-CNN. The head's positive IoU is its stage's
``StageSpec.iou_threshold`` (positive = negative threshold, no low-quality matches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, batched_nms, clip_boxes_to_image, remove_small_boxes

from rsdet.models.assign.max_iou import max_iou_assign
from rsdet.models.samplers import sample_instances
from rsdet.models.stage import StageOutput, StageSpec


@dataclass
class RoIRows:
    """The RoIs of one training step after assignment and sampling, image by image: boxes (M, 4), the
    assigned class, matched GT box and image of each row, and whether the row is an appended GT box."""

    boxes: Tensor
    classes: Tensor
    gts: Tensor
    image_index: Tensor
    is_gt: Tensor
    gt_index: Tensor | None = None  # matched GT within its image (-1 for negatives): the mask targets

    def select(self, keep: Tensor) -> "RoIRows":
        return RoIRows(self.boxes[keep], self.classes[keep], self.gts[keep], self.image_index[keep],
                       self.is_gt[keep], None if self.gt_index is None else self.gt_index[keep])


class RoIHead(nn.Module):
    def __init__(self, cfg: Any, in_channels: int, num_classes: int, classifier: str, prior_prob, box_coder_weights,
                 featmap_names: list[str], spec: StageSpec, sampler: dict, class_agnostic: bool = False):
        super().__init__()
        self.spec = spec
        self.sampler = sampler
        self.num_classes = num_classes
        self.classifier = classifier
        pool = int(cfg.pool_size)
        self.roi_align = MultiScaleRoIAlign(featmap_names, pool, sampling_ratio=int(cfg.get("sampling_ratio", 2)))
        rep = int(cfg.representation)
        self.box_head = TwoMLPHead(in_channels * pool * pool, rep)
        num_logits = num_classes + (1 if classifier == "softmax" else 0)
        self.cls_score = nn.Linear(rep, num_logits)
        self.class_agnostic = bool(class_agnostic)
        self.bbox_pred = nn.Linear(rep, 4 if self.class_agnostic else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        bias = -math.log((1 - prior_prob) / prior_prob) if prior_prob else 0.0
        nn.init.constant_(self.cls_score.bias, bias)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box_coder = det_utils.BoxCoder(tuple(box_coder_weights))
        self.fg_iou = float(spec.iou_threshold)
        self.matcher = det_utils.Matcher(self.fg_iou, self.fg_iou, allow_low_quality_matches=False)
        self.append_gt = bool(cfg.get("append_gt", True))
        self.nms_thresh = float(cfg.nms_thresh)
        self.detections_per_img = int(cfg.detections_per_img)

    def _predict(self, features, boxes: list[Tensor], image_sizes):
        x = self.roi_align(features, boxes, image_sizes)
        x = self.box_head(x)
        return self.cls_score(x), self.bbox_pred(x)

    def assign(self, proposals: list[Tensor], targets: list[dict]) -> RoIRows:
        """Append GT boxes to the proposals (docs/detectors.md) and match at the stage's IoU."""
        boxes, classes, gts, image_index, is_gt, gt_index = [], [], [], [], [], []
        for i, (props, tgt) in enumerate(zip(proposals, targets)):
            gt = tgt["boxes"]
            num_props = len(props)
            if self.append_gt and gt.numel():
                props = torch.cat([props, gt])
            cls, matched_gt, index = max_iou_assign(self.matcher, props, gt, tgt["labels"])
            gt_index.append(index)
            boxes.append(props)
            classes.append(cls)
            gts.append(matched_gt)
            image_index.append(torch.full((len(props),), i, device=props.device))
            flag = torch.zeros(len(props), dtype=torch.bool, device=props.device)
            flag[num_props:] = True
            is_gt.append(flag)
        return RoIRows(torch.cat(boxes), torch.cat(classes), torch.cat(gts), torch.cat(image_index), torch.cat(is_gt),
                       torch.cat(gt_index))

    def forward_train(self, features, proposals, image_sizes, targets) -> StageOutput:
        return self.train_step(features, proposals, image_sizes, targets)[0]

    def train_step(self, features, proposals, image_sizes, targets) -> tuple[StageOutput, RoIRows]:
        """The stage's ``StageOutput`` and the sampled rows it was computed on (for Cascade's refinement)."""
        rows = self.assign(proposals, targets)
        rows = rows.select(sample_instances(rows.classes, rows.image_index, len(proposals), **self.sampler))
        boxes, classes = rows.boxes, rows.classes
        per_image = [boxes[rows.image_index == i] for i in range(len(proposals))]
        logits, deltas = self._predict(features, per_image, image_sizes)
        # the sampled indices are sorted and rows were built image by image, so the per-image split
        # above keeps the row order: logits line up with boxes/classes/gts without re-indexing.
        if not self.class_agnostic:
            deltas = deltas.view(len(boxes), self.num_classes, 4)
            # deltas of the assigned class (class 0 for negatives: unused by any loss)
            deltas = deltas[torch.arange(len(boxes), device=boxes.device), classes.clamp(min=0)]
        out = StageOutput(spec=self.spec, cls_logits=logits, box_deltas=deltas, ref_boxes=boxes, gt_boxes=rows.gts,
                          gt_classes=classes, box_coder=self.box_coder, image_index=rows.image_index)
        return out, rows

    def scores(self, logits: Tensor) -> Tensor:
        """(N, C) class scores: softmax without the background column, or sigmoid."""
        if self.classifier == "softmax":
            return logits.softmax(-1)[:, : self.num_classes]
        return logits.sigmoid()

    def decode(self, deltas: Tensor, proposals: list[Tensor]) -> Tensor:
        """(N, C, 4) boxes of every class (class-agnostic: the one box repeated)."""
        boxes = self.box_coder.decode(deltas, proposals)
        if self.class_agnostic:
            return boxes.view(-1, 1, 4).expand(-1, self.num_classes, 4)
        return boxes.view(-1, self.num_classes, 4)

    @torch.no_grad()
    def forward_test(self, features, proposals, image_sizes, score_thresh: float):
        """Multiclass NMS over (box, class) candidates whose score exceeds ``score_thresh``."""
        logits, deltas = self._predict(features, proposals, image_sizes)
        return self.postprocess(self.decode(deltas, proposals), self.scores(logits), [len(p) for p in proposals],
                                image_sizes, score_thresh)

    def postprocess(self, boxes: Tensor, scores: Tensor, counts: list[int], image_sizes, score_thresh: float):
        """Per image: clip, drop candidates at or below ``score_thresh`` and tiny boxes, class-wise NMS,
        keep the ``detections_per_img`` best. ``boxes`` (N, C, 4), ``scores`` (N, C)."""
        results = []
        for b, s, size in zip(boxes.split(counts), scores.split(counts), image_sizes):
            b = clip_boxes_to_image(b, size)
            labels = torch.arange(self.num_classes, device=b.device).expand_as(s)
            b, s, labels = b.reshape(-1, 4), s.reshape(-1), labels.reshape(-1)
            keep = torch.nonzero(s > score_thresh).flatten()
            b, s, labels = b[keep], s[keep], labels[keep]
            keep = remove_small_boxes(b, 1e-2)
            b, s, labels = b[keep], s[keep], labels[keep]
            keep = batched_nms(b, s, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": b[keep], "scores": s[keep], "labels": labels[keep]})
        return results
