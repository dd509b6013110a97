"""Mask R-CNN: Faster R-CNN plus a mask branch on the R-CNN stage's positives (He et al., ICCV 2017;
the RS recipe of the paper's §4 and supplementary Table S11; docs/detectors.md, "Mask R-CNN").

The loss-bearing stages are Faster R-CNN's ``rpn`` and ``rcnn``; ``rcnn`` is a mask stage
(``StageSpec.masks``): its ``StageOutput`` carries the mask logits of its positive RoIs (at most
``detector.mask.max_rois`` per batch) and their targets, and the criterion adds the ``rcnn_mask``
term: the score-weighted Dice loss with value-based self-balance against the RoI ranking loss (RS),
or per-pixel BCE (``loss=ce``). At test the branch predicts a 28 x 28 mask for each detection at its
class; the detections leave ``forward`` with ``masks`` (n, 1, H, W) probabilities in the original
image frame.
"""

from __future__ import annotations

from typing import Any

from rsdet.models.criterion import stage_loss_config
from rsdet.models.detectors.faster_rcnn import FasterRCNN
from rsdet.models.heads.roi_mask import MaskBranch
from rsdet.models.registry import register


@register("mask_rcnn")
class MaskRCNN(FasterRCNN):
    predicts_masks = True

    def __init__(self, cfg: Any, num_classes: int):
        super().__init__(cfg, num_classes)
        rcnn_spec = self.stages[-1]
        featmaps = [str(i) for i in range(len(cfg.detector.backbone.returned_stages))]
        self.mask_branch = MaskBranch(cfg.detector.mask, self.backbone.out_channels, num_classes, featmaps,
                                      label_kind=stage_loss_config(cfg.loss, rcnn_spec).label)

    def stage_outputs(self, images, features, targets):
        proposals, rpn_out = self.rpn(images, features, targets)
        proposals = [p.detach() for p in proposals]
        roi_out, rows = self.roi_head.train_step(features, proposals, images.image_sizes, targets)
        roi_out.masks = self.mask_branch.train_step(features, images.image_sizes, targets, rows.boxes, rows.classes,
                                                    rows.gt_index, rows.image_index)
        return [rpn_out, roi_out]

    def detect(self, images, features):
        detections = super().detect(images, features)
        return self.mask_branch.forward_test(features, detections, images.image_sizes)
