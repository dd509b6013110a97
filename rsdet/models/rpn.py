"""Region proposal network: torchvision's anchor generator, head and proposal filter, rsdet's assignment.

The head only *predicts*; the assignment here only *labels* anchors. Turning the two into losses is
the criterion's job (``rsdet.models.criterion``), so that every classification loss, sampler and
balancing option applies to the RPN unchanged (architecture guide, "the one idea").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import box_iou


@dataclass
class StageOutput:
    """What a head hands to the criterion for one stage (flattened over the images of the batch).

    ``image_index`` (M,) says which image of the batch each row belongs to (samplers work per image).
    ``cls_logits`` is (M, K): K = 1 for the RPN, C (sigmoid) or C + 1 (softmax, background last) for
    the R-CNN. ``gt_classes`` is (M,): the assigned class in [0, C) for a positive, -1 for a negative
    and -2 for an ignored instance. ``box_deltas`` (M, 4) are already the deltas of the assigned
    class. ``ref_boxes`` are the anchors / proposals the deltas are relative to and ``gt_boxes`` the
    matched ground truth (undefined for negatives).
    """

    name: str
    cls_logits: Tensor
    box_deltas: Tensor
    ref_boxes: Tensor
    gt_boxes: Tensor
    gt_classes: Tensor
    box_coder: det_utils.BoxCoder
    num_classes: int
    iou_threshold: float
    image_index: Tensor


class LowQualityFloorMatcher(det_utils.Matcher):
    """torchvision's Matcher with mmdet's ``min_pos_iou`` floor on low-quality matches (spec §7).

    torchvision promotes each GT's best anchors to positives whatever their IoU; the RS configs only
    do so when that IoU is at least ``min_pos_iou`` (0.3 for the RPN).
    """

    def __init__(self, high: float, low: float, min_pos_iou: float):
        super().__init__(high, low, allow_low_quality_matches=True)
        self.min_pos_iou = min_pos_iou

    def set_low_quality_matches_(self, matches: Tensor, all_matches: Tensor, quality: Tensor) -> None:
        best, _ = quality.max(dim=1)
        gt_idx, pred_idx = torch.where((quality == best[:, None]) & (best[:, None] >= self.min_pos_iou))
        matches[pred_idx] = all_matches[pred_idx]


class RPN(nn.Module):
    """Single-logit objectness RPN over FPN levels (spec §2.2)."""

    def __init__(self, cfg: Any, in_channels: int, box_coder_weights):
        super().__init__()
        sizes = tuple((int(s),) for s in cfg.anchor_sizes)
        ratios = (tuple(float(r) for r in cfg.aspect_ratios),) * len(sizes)
        self.anchor_generator = AnchorGenerator(sizes, ratios)
        self.head = RPNHead(in_channels, self.anchor_generator.num_anchors_per_location()[0])
        for layer in self.head.modules():
            if isinstance(layer, nn.Conv2d):  # N(0, 0.01), zero bias (spec §2.1 head init)
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
        self.box_coder = det_utils.BoxCoder(tuple(box_coder_weights))
        self.matcher = LowQualityFloorMatcher(cfg.fg_iou, cfg.bg_iou, cfg.get("min_pos_iou", cfg.bg_iou))
        self.fg_iou = float(cfg.fg_iou)
        # torchvision's filter_proposals does per-level top-k, NMS per level and top-n per image.
        self._proposals = RegionProposalNetwork(
            self.anchor_generator,
            self.head,
            cfg.fg_iou,
            cfg.bg_iou,
            256,
            0.5,
            pre_nms_top_n={"training": int(cfg.pre_nms_top_n_train), "testing": int(cfg.pre_nms_top_n_test)},
            post_nms_top_n={"training": int(cfg.post_nms_top_n_train), "testing": int(cfg.post_nms_top_n_test)},
            nms_thresh=float(cfg.nms_thresh),
        )

    def assign(self, anchors: list[Tensor], targets: list[dict]) -> tuple[Tensor, Tensor]:
        """Label anchors: 0 (object) / -1 (background) / -2 (between thresholds, ignored)."""
        classes, gts = [], []
        for anc, tgt in zip(anchors, targets):
            gt = tgt["boxes"]
            if gt.numel() == 0:
                classes.append(torch.full((len(anc),), -1, dtype=torch.long, device=anc.device))
                gts.append(torch.zeros_like(anc))
                continue
            matched = self.matcher(box_iou(gt, anc))
            cls = torch.zeros(len(anc), dtype=torch.long, device=anc.device)
            cls[matched == det_utils.Matcher.BELOW_LOW_THRESHOLD] = -1
            cls[matched == det_utils.Matcher.BETWEEN_THRESHOLDS] = -2
            classes.append(cls)
            gts.append(gt[matched.clamp(min=0)])
        return torch.cat(classes), torch.cat(gts)

    def forward(self, images, features: dict[str, Tensor], targets: list[dict] | None = None):
        feats = list(features.values())
        objectness, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        num_images = len(anchors)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.box_coder.decode(deltas.detach(), anchors).view(num_images, -1, 4)
        self._proposals.training = self.training
        boxes, _ = self._proposals.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        if targets is None:
            return boxes, None
        gt_classes, gt_boxes = self.assign(anchors, targets)
        out = StageOutput(
            name="rpn",
            cls_logits=objectness.view(-1, 1),
            box_deltas=deltas.view(-1, 4),
            ref_boxes=torch.cat(anchors),
            gt_boxes=gt_boxes,
            gt_classes=gt_classes,
            box_coder=self.box_coder,
            num_classes=1,
            iou_threshold=self.fg_iou,
            image_index=torch.cat([torch.full((len(a),), i, device=a.device) for i, a in enumerate(anchors)]),
        )
        return boxes, out
