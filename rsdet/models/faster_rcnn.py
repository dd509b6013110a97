"""Faster R-CNN assembled from torchvision parts, trained by rsdet's criterion (spec §2.1-2.3, §7).

``FasterRCNN.forward(images, targets)`` returns ``(loss_terms, stats)`` in training mode and a list
of detections (boxes in input-image pixels, scores, labels in [0, C)) in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from rsdet.models.backbone import build_backbone
from rsdet.models.criterion import SOFTMAX_LOSSES, Criterion, stage_loss_config
from rsdet.models.roi_head import RoIHead
from rsdet.models.rpn import RPN
from rsdet.models.samplers import stage_sampler

# ImageNet statistics in [0, 1] units (spec §7: mean 123.675/116.28/103.53, std 58.395/57.12/57.375).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def resolve_sampler(sampler_cfg: Any, loss_cfg: Any) -> dict[str, dict]:
    """``sampler=auto`` takes the loss recipe's own default (CE: random/random, RS: none/none)."""
    resolved = {}
    for stage in ("rpn", "rcnn"):
        kind = sampler_cfg.get(stage, "auto")
        if kind == "auto":
            kind = loss_cfg.default_sampler[stage]
        merged = {stage: kind, "budget": sampler_cfg.get("budget", {})}
        resolved[stage] = stage_sampler(merged, stage)
    return resolved


class FasterRCNN(nn.Module):
    def __init__(self, detector_cfg: Any, loss_cfg: Any, sampler_cfg: Any, num_classes: int,
                 min_size: int, max_size: int, ranking_group: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.transform = GeneralizedRCNNTransform(int(min_size), int(max_size), IMAGE_MEAN, IMAGE_STD,
                                                  size_divisible=32)
        self.backbone = build_backbone(detector_cfg.backbone)
        channels = self.backbone.out_channels
        coder = tuple(detector_cfg.box_coder_weights)
        self.rpn = RPN(detector_cfg.rpn, channels, coder)
        cls = stage_loss_config(loss_cfg, "rcnn").cls
        classifier = "softmax" if cls in SOFTMAX_LOSSES else "sigmoid"
        featmaps = [str(i) for i in range(len(detector_cfg.backbone.returned_stages))]
        self.roi_head = RoIHead(detector_cfg.roi, channels, num_classes, classifier, loss_cfg.get("prior_prob"),
                                coder, featmaps)
        self.samplers = resolve_sampler(sampler_cfg, loss_cfg)
        self.criterion = Criterion(loss_cfg, self.samplers, ranking_group)
        self.score_thresh = float(loss_cfg.test_score_thresh)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        if self.training:
            targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        if self.training:
            return self._losses(image_list, features, targets)
        proposals, _ = self.rpn(image_list, features)
        dets = self.roi_head.forward_test(features, proposals, image_list.image_sizes, self.score_thresh)
        return self.transform.postprocess(dets, image_list.image_sizes, original_sizes)

    def _losses(self, image_list, features, targets):
        num_images = len(targets)
        proposals, rpn_out = self.rpn(image_list, features, targets)
        rpn_terms, rpn_stats = self.criterion(rpn_out, num_images)
        proposals = [p.detach() for p in proposals]
        roi_out = self.roi_head.forward_train(features, proposals, image_list.image_sizes, targets,
                                              self.samplers["rcnn"])
        roi_terms, roi_stats = self.criterion(roi_out, num_images)
        return {**rpn_terms, **roi_terms}, {**rpn_stats, **roi_stats}


def build_detector(cfg: Any, num_classes: int) -> nn.Module:
    """Build the detector named by ``cfg.detector.name`` for ``num_classes`` foreground classes."""
    name = cfg.detector.name
    if name != "faster_rcnn":
        from rsdet.errors import ConfigError

        raise ConfigError(f"detector={name!r} is not available yet; choose detector=faster_rcnn")
    min_size = cfg.detector.get("min_size") or cfg.dataset.min_size
    max_size = cfg.detector.get("max_size") or cfg.dataset.max_size
    return FasterRCNN(cfg.detector, cfg.loss, cfg.sampler, num_classes, min_size, max_size,
                      ranking_group=cfg.schedule.get("ranking_group"))
