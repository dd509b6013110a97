"""Region proposal network: torchvision's anchor generator, head and proposal filter; rsdet's
assignment and sampling (paper §4 and docs/detectors.md, "Faster R-CNN").

The head only *predicts*; ``forward`` also *labels* the anchors and runs the stage's sampler, then
hands everything to the criterion as one ``StageOutput``, so that every classification loss,
sampler and balancing option applies to the RPN unchanged. The module is torchvision's
``RegionProposalNetwork`` (its proposal filter: per-level top-k, NMS per level, top-n per image), so
the head's weights exist once (``rpn.head.*``).

``allowed_border`` (Cascade R-CNN's RPN: 0) ignores anchors that are not inside the image: an
anchor survives when x1, y1 >= -b and x2, y2 < width/height + b. Those anchors are assigned among
themselves (a ground truth's low-quality match is its best *inside* anchor); the others get the
label ``IGNORED`` and never enter the loss, but still produce proposals. A negative value (Faster
R-CNN's default) keeps every anchor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers

from rsdet.models.assign.max_iou import MinIoUMatcher, max_iou_assign
from rsdet.models.samplers import sample_stage
from rsdet.models.stage import IGNORED, StageOutput, StageSpec


def inside_anchors(anchors: Tensor, image_size: tuple[int, int], allowed_border: float) -> Tensor:
    """Mask of the anchors lying inside an (h, w) image up to ``allowed_border`` pixels; all True when
    ``allowed_border`` < 0. The right/bottom edges are strict (x2 < w + b)."""
    if allowed_border < 0:
        return torch.ones(len(anchors), dtype=torch.bool, device=anchors.device)
    h, w = image_size
    b = float(allowed_border)
    return ((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) & (anchors[:, 2] < w + b) & (anchors[:, 3] < h + b))


class RPN(RegionProposalNetwork):
    """Single-logit objectness RPN over FPN levels: anchors 8 × stride, ratios {0.5, 1, 2}."""

    def __init__(self, cfg: Any, in_channels: int, box_coder_weights, spec: StageSpec, sampler: dict):
        sizes = tuple((int(s),) for s in cfg.anchor_sizes)
        ratios = (tuple(float(r) for r in cfg.aspect_ratios),) * len(sizes)
        anchor_generator = AnchorGenerator(sizes, ratios)
        head = RPNHead(in_channels, anchor_generator.num_anchors_per_location()[0])
        for layer in head.modules():
            if isinstance(layer, nn.Conv2d):  # N(0, 0.01), zero bias (docs/detectors.md, "Initialisation")
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
        super().__init__(
            anchor_generator, head, cfg.fg_iou, cfg.bg_iou, 256, 0.5,
            pre_nms_top_n={"training": int(cfg.pre_nms_top_n_train), "testing": int(cfg.pre_nms_top_n_test)},
            post_nms_top_n={"training": int(cfg.post_nms_top_n_train), "testing": int(cfg.post_nms_top_n_test)},
            nms_thresh=float(cfg.nms_thresh),
        )
        self.box_coder = det_utils.BoxCoder(tuple(box_coder_weights))
        self.proposal_matcher = MinIoUMatcher(cfg.fg_iou, cfg.bg_iou, cfg.get("min_pos_iou", cfg.bg_iou))
        self.allowed_border = float(cfg.get("allowed_border", -1))
        self.spec = spec
        self.sampler = sampler

    def forward(self, images, features: dict[str, Tensor], targets: list[dict] | None = None):
        """Proposals per image, and (with ``targets``) the RPN's ``StageOutput``."""
        feats = list(features.values())
        objectness, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        num_images = len(anchors)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.box_coder.decode(deltas.detach(), anchors).view(num_images, -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        if targets is None:
            return boxes, None
        classes, gts = [], []
        for anc, tgt, size in zip(anchors, targets, images.image_sizes):
            if self.allowed_border < 0:
                cls, gt, _ = max_iou_assign(self.proposal_matcher, anc, tgt["boxes"], None)
            else:
                inside = inside_anchors(anc, size, self.allowed_border)
                cls = torch.full((len(anc),), IGNORED, dtype=torch.long, device=anc.device)
                gt = torch.zeros_like(anc)
                cls[inside], gt[inside], _ = max_iou_assign(self.proposal_matcher, anc[inside], tgt["boxes"], None)
            classes.append(cls)
            gts.append(gt)
        out = StageOutput(
            spec=self.spec,
            cls_logits=objectness.view(-1, 1),
            box_deltas=deltas.view(-1, 4),
            ref_boxes=torch.cat(anchors),
            gt_boxes=torch.cat(gts),
            gt_classes=torch.cat(classes),
            box_coder=self.box_coder,
            image_index=torch.cat([torch.full((len(a),), i, device=a.device) for i, a in enumerate(anchors)]),
        )
        return boxes, sample_stage(out, self.sampler, num_images, row_losses=False)
