"""Faster R-CNN assembled from torchvision parts, trained by rsdet's criterion (docs/detectors.md).

Two loss-bearing stages: ``rpn`` (one objectness logit per anchor) and ``rcnn`` (the box head on
the proposals, GT boxes appended). The RS recipe weighs the RPN by 0.2 (``loss.stage_weights``).
"""

from __future__ import annotations

from typing import Any

from rsdet.losses import classifier_of
from rsdet.models.backbone import build_backbone
from rsdet.models.criterion import stage_loss_config
from rsdet.models.detectors.base import Detector
from rsdet.models.heads.roi_box import RoIHead
from rsdet.models.heads.rpn import RPN
from rsdet.models.registry import register
from rsdet.models.samplers import resolve_stage_sampler
from rsdet.models.stage import StageSpec


@register("faster_rcnn")
class FasterRCNN(Detector):
    def __init__(self, cfg: Any, num_classes: int):
        det = cfg.detector
        rpn_spec = StageSpec("rpn", 1, iou_threshold=float(det.rpn.fg_iou), objectness=True)
        rcnn_spec = StageSpec("rcnn", num_classes, iou_threshold=float(det.roi.fg_iou), masks=self.predicts_masks)
        super().__init__(cfg, num_classes, [rpn_spec, rcnn_spec])
        self.backbone = build_backbone(det.backbone)
        channels = self.backbone.out_channels
        coder = tuple(det.box_coder_weights)
        rpn_coder = tuple(det.rpn.get("box_coder_weights") or coder)  # torchvision's weights: [1, 1, 1, 1]
        self.rpn = RPN(det.rpn, channels, rpn_coder, rpn_spec, resolve_stage_sampler(cfg.sampler, cfg.loss, "rpn"))
        classifier = classifier_of(stage_loss_config(cfg.loss, rcnn_spec).cls)
        featmaps = [str(i) for i in range(len(det.backbone.returned_stages))]
        self.roi_head = RoIHead(det.roi, channels, num_classes, classifier, cfg.loss.get("prior_prob"), coder,
                                featmaps, rcnn_spec, resolve_stage_sampler(cfg.sampler, cfg.loss, "rcnn"))
        self._register_load_state_dict_pre_hook(_upgrade_state_dict)

    def stage_outputs(self, images, features, targets):
        proposals, rpn_out = self.rpn(images, features, targets)
        proposals = [p.detach() for p in proposals]
        roi_out = self.roi_head.forward_train(features, proposals, images.image_sizes, targets)
        return [rpn_out, roi_out]

    def detect(self, images, features):
        proposals, _ = self.rpn(images, features)
        return self.roi_head.forward_test(features, proposals, images.image_sizes, self.score_thresh)


def _upgrade_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Checkpoints of rsdet <= 0.1 stored the RPN head twice (``rpn._proposals.head.*``) and the
    criterion state outside the model: drop the copy, accept the missing criterion state."""
    for key in [k for k in state_dict if k.startswith(prefix + "rpn._proposals.")]:
        del state_dict[key]
    state_dict.setdefault(prefix + "criterion._extra_state", {})
