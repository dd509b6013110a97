"""YOLACT (Bolya et al., ICCV 2019) and RS-YOLACT (paper §4, supplementary Table S6).

ResNet + FPN P3-P7, one shared head with 3 anchors per location (aspect ratios 0.5, 1, 2; one size
per level) predicting class scores, box deltas and 32 tanh mask coefficients; a protonet on P3
predicts 32 prototypes. An anchor's mask is sigmoid(prototypes · coefficients), cropped to its GT
box in training and to its predicted box at test. One loss-bearing stage, ``head``, declared with
``masks=True``: the criterion adds the mask term (RS: per-positive Dice, score-weighted mean,
value self-balance; standard YOLACT ``loss=ce``: softmax CE over OHEM 3:1 rows, smooth L1 boxes,
BCE masks). Test: Fast NMS. docs/detectors.md, "YOLACT".
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import clip_boxes_to_image

from rsdet import losses as L
from rsdet.errors import ConfigError, DataError
from rsdet.models.assign.atss import atss_assign_boxes_images
from rsdet.models.assign.max_iou import MinIoUMatcher, max_iou_assign
from rsdet.models.anchors import grid_anchors
from rsdet.models.backbone import build_backbone
from rsdet.models.detectors.base import Detector
from rsdet.models.fast_nms import fast_nms, standard_nms
from rsdet.models.heads.protonet import ProtoNet, YolactHead, assemble_masks, gt_masks_at, prototype_mask_prediction
from rsdet.models.image_masks import crop_masks
from rsdet.models.registry import register
from rsdet.models.samplers import resolve_stage_sampler, sample_stage
from rsdet.models.stage import StageOutput, StageSpec
from rsdet.models.topk import top_k_per_level

NMS_KINDS = {"fast": fast_nms, "standard": standard_nms}


@register("yolact")
class YOLACT(Detector):
    """YOLACT with a class-wise sigmoid classifier (RS, AP, aLRP, focal) or a softmax one with the
    background (``loss=ce``, the standard YOLACT); the classifier follows the loss."""

    predicts_masks = True
    crop_image_masks_to_boxes = True  # zero outside the predicted box, also after resizing to the original frame

    def __init__(self, cfg: Any, num_classes: int):
        det = cfg.detector
        spec = StageSpec("head", num_classes, iou_threshold=float(det.assigner.fg_iou), masks=True)
        super().__init__(cfg, num_classes, [spec])
        self.spec = spec
        self.softmax = L.classifier_of(self.criterion.cfg["head"].cls) == "softmax"
        head, proto = det.head, det.proto
        self.strides = [int(s) for s in head.strides]
        scales = int(head.get("scales_per_octave", 1) or 1)
        if scales < 1:
            raise ConfigError(f"detector.head.scales_per_octave must be >= 1, got {scales}")
        # one size per level (YOLACT), or `scales` sizes s·2^(k/scales) per level (the CPU preset)
        self.anchor_sizes = [tuple(float(s) * 2 ** (k / scales) for k in range(scales)) for s in head.anchor_sizes]
        self.aspect_ratios = tuple(float(r) for r in head.aspect_ratios)
        if len(self.anchor_sizes) != len(self.strides):
            raise ConfigError(f"detector.head.anchor_sizes has {len(self.anchor_sizes)} values for "
                              f"{len(self.strides)} levels (detector.head.strides); give one size per level")
        self.backbone = build_backbone(det.backbone)
        if det.backbone.get("extra_levels") != "p6p7" or len(self.strides) != len(det.backbone.returned_stages) + 2:
            raise ConfigError("detector=yolact needs FPN P3-P7: detector.backbone.extra_levels=p6p7 and "
                              f"detector.head.strides with returned_stages + 2 levels (got {self.strides})")
        channels = self.backbone.out_channels
        self.num_protos = int(head.num_protos)
        self.head = YolactHead(channels, scales * len(self.aspect_ratios), num_classes + (1 if self.softmax else 0),
                               num_protos=self.num_protos, num_convs=int(head.num_convs),
                               feat_channels=head.get("feat_channels"),
                               prior_prob=None if self.softmax else head.get("prior_prob"),
                               norm=str(head.get("norm", "none") or "none"), cls_convs=int(head.get("cls_convs", 0) or 0))
        self.protonet = ProtoNet(channels, int(proto.channels), self.num_protos, int(proto.num_convs))
        a = det.assigner
        self.assigner_kind = str(a.get("kind", "max_iou") or "max_iou")
        if self.assigner_kind not in ("max_iou", "atss"):
            raise ConfigError(f"detector.assigner.kind={self.assigner_kind!r} is not one of max_iou (YOLACT), "
                              "atss (the CPU preset; docs/detectors.md)")
        self.atss_topk = int(a.get("topk", 9) or 9)
        self.matcher = MinIoUMatcher(float(a.fg_iou), float(a.bg_iou), min_pos_iou=float(a.min_pos_iou))
        self.box_coder = det_utils.BoxCoder(tuple(det.box_coder_weights), bbox_xform_clip=math.log(1000.0 / 16))
        self.sampler = resolve_stage_sampler(cfg.sampler, cfg.loss, "head")
        self.crop_padding = float(proto.get("crop_padding", 1.0))
        test = det.test
        if test.nms not in NMS_KINDS:
            raise ConfigError(f"detector.test.nms={test.nms!r} is not one of {', '.join(NMS_KINDS)}")
        self.nms = NMS_KINDS[test.nms]
        self.pre_nms_top_n = int(test.pre_nms_top_n)
        self.nms_thresh = float(test.nms_thresh)
        self.top_k = int(test.top_k)
        self.detections_per_img = int(test.detections_per_img)

    # ------------------------------------------------------------------ shared pieces
    def _predict(self, features: dict[str, Tensor]):
        feats = list(features.values())
        cls, reg, coef = self.head(feats)
        protos = self.protonet(feats[0])
        shapes = [tuple(f.shape[-2:]) for f in feats]
        anchors = grid_anchors(shapes, self.strides, self.anchor_sizes, cls.device, self.aspect_ratios, 0.5)
        return cls, reg, coef, protos, anchors

    @staticmethod
    def _proto_stride(padded: tuple[int, int], protos: Tensor) -> Tensor:
        """Input pixels per prototype pixel along x and y (4 with P3 upsampled ×2)."""
        h, w = protos.shape[-2:]
        return protos.new_tensor([padded[1] / w, padded[0] / h, padded[1] / w, padded[0] / h])

    def _assign(self, anchors: Tensor, per_level: list[int], target: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(classes, matched GT boxes, matched GT index) of every anchor: max-IoU (YOLACT: positive
        >= fg_iou, negative < bg_iou, ignored between) or ATSS (no ignored rows; docs/assigners.md)."""
        return self._assign_images(anchors, per_level, [target])

    def _assign_images(self, anchors: Tensor, per_level: list[int], targets: list[dict]
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """``_assign`` of every image, (B·A,) rows image after image; the matched GT index points into the
        images' boxes concatenated. ATSS assigns the batch in one pass (docs/performance.md)."""
        if self.assigner_kind == "atss":
            return atss_assign_boxes_images(anchors, per_level, [t["boxes"] for t in targets],
                                            [t["labels"] for t in targets], self.atss_topk)
        classes, gts, index, offset = [], [], [], 0
        for target in targets:
            c, g, i = max_iou_assign(self.matcher, anchors, target["boxes"], target["labels"])
            classes.append(c)
            gts.append(g)
            index.append(torch.where(i >= 0, i + offset, i))
            offset += len(target["boxes"])
        return torch.cat(classes), torch.cat(gts), torch.cat(index)

    def stage_outputs(self, images, features, targets):
        cls, reg, coef, protos, anchor_levels = self._predict(features)
        anchors = torch.cat(anchor_levels)
        per_level = [len(a) for a in anchor_levels]
        padded = tuple(images.tensors.shape[-2:])
        proto_size = tuple(protos.shape[-2:])
        if any("masks" not in target for target in targets):
            raise DataError("detector=yolact trains on instance masks, but the training targets have none; "
                            "set dataset.with_masks=true (a dataset with segmentations)")
        gt_classes, gt_boxes, gt_index = self._assign_images(anchors, per_level, targets)
        gt_masks = [gt_masks_at(target["masks"], padded, proto_size) for target in targets]
        num_images, n = cls.shape[:2]
        image_index = torch.arange(num_images, device=cls.device).repeat_interleave(n)
        # every positive trains the mask (the samplers keep all of them but the random one, whose
        # dropped positives leave the mask rows through StageOutput.select)
        masks = prototype_mask_prediction(protos, coef.reshape(-1, self.num_protos), image_index,
                                          torch.nonzero(gt_classes >= 0).flatten(),
                                          torch.cat(gt_masks).to(protos.dtype), gt_index,
                                          gt_boxes / self._proto_stride(padded, protos), padding=self.crop_padding)
        out = StageOutput(spec=self.spec, cls_logits=cls.reshape(-1, cls.shape[-1]), box_deltas=reg.reshape(-1, 4),
                          ref_boxes=anchors.repeat(num_images, 1), gt_boxes=gt_boxes, gt_classes=gt_classes,
                          box_coder=self.box_coder, image_index=image_index, masks=masks)
        return [sample_stage(out, self.sampler, num_images, softmax=self.softmax)]

    # ------------------------------------------------------------------ test
    def _scores(self, cls: Tensor) -> Tensor:
        return cls.softmax(-1)[:, :-1] if self.softmax else cls.sigmoid()

    @torch.no_grad()
    def detect(self, images, features):
        """Detections in the resized frame; each detection's mask as ``image_masks`` (n, h, w) at the
        prototype resolution over the padded input, zero outside its predicted box (+ the crop padding);
        ``Detector.forward`` maps them to the original frame as ``masks`` (docs/detectors.md)."""
        cls, reg, coef, protos, anchor_levels = self._predict(features)
        per_level = [len(a) for a in anchor_levels]
        anchors = torch.cat(anchor_levels)
        stride = self._proto_stride(tuple(images.tensors.shape[-2:]), protos)
        results = []
        for b, size in enumerate(images.image_sizes):
            scores = self._scores(cls[b])
            rows = top_k_per_level(scores, per_level, self.pre_nms_top_n)
            boxes = clip_boxes_to_image(self.box_coder.decode_single(reg[b, rows], anchors[rows]), size)
            kept, labels, kept_scores = self.nms(boxes, scores[rows], self.nms_thresh, self.score_thresh, self.top_k,
                                                 self.detections_per_img)
            boxes = boxes[kept]
            masks = crop_masks(assemble_masks(protos[b], coef[b, rows[kept]]), boxes / stride, self.crop_padding)
            results.append({"boxes": boxes, "scores": kept_scores, "labels": labels, "image_masks": masks})
        return results
