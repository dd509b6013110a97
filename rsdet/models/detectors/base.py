"""The base every detector builds on: image transform, backbone, criterion, one forward.

A detector declares its loss-bearing stages (``self.stages``: ``StageSpec`` list), returns one
``StageOutput`` per stage from ``stage_outputs`` in training and detections from ``detect`` at test;
the base turns stage outputs into named loss terms with the shared criterion. ``forward`` returns
``(loss_terms, stats)`` in training mode and a list of detections (boxes in original-image pixels,
scores, labels in [0, C), and ``masks`` for a mask detector) in eval mode (docs/detectors.md,
"The model layer" and "Detection output").

Masks leave ``detect`` in one of two forms, and ``forward`` brings both to the original frame:
``masks`` (n, 1, M, M) per RoI in the resized frame (Mask R-CNN; torchvision's ``postprocess``
pastes them into their boxes), or ``image_masks`` (n, h, w) covering the padded input at any
proportional resolution (YOLACT, SOLO-style heads; ``rsdet.models.image_masks``).
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from rsdet.errors import RsdetError
from rsdet.models.criterion import Criterion, check_stage_overrides
from rsdet.models.image_masks import image_masks_to_original
from rsdet.models.stage import StageOutput, StageSpec

# ImageNet statistics in [0, 1] units (mean 123.675/116.28/103.53, std 58.395/57.12/57.375 in 0-255).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def test_score_thresh(cfg: Any) -> float:
    """The detector's test score threshold: ``detector.test_score_thresh`` when the detector fixes one
    (ATSS/PAA: 0.05 for every loss), else the loss recipe's (RS 0.40, CE 0.05 on Faster R-CNN)."""
    value = (cfg.get("detector") or {}).get("test_score_thresh")
    return float(cfg.loss.test_score_thresh if value is None else value)


class Detector(nn.Module):
    """Subclasses set ``self.backbone`` and implement ``stage_outputs`` and ``detect``.

    ``predicts_masks``: the detector's detections carry ``masks`` (n, 1, H, W) probabilities in the
    original image frame (docs/detectors.md, "Detection output"); mask AP (``eval.iou_types``
    with segm) is allowed only for such detectors. ``detect`` returns them as RoI ``masks`` or as
    whole-input ``image_masks`` (module docstring)."""

    predicts_masks: bool = False
    #: ``image_masks`` are set to zero outside their detection's box in the original frame (YOLACT
    #: crops its assembled masks to the predicted box)
    crop_image_masks_to_boxes: bool = False

    def __init__(self, cfg: Any, num_classes: int, stages: Sequence[StageSpec], size_divisible: int = 32):
        super().__init__()
        self.num_classes = num_classes
        self.stages = tuple(stages)
        min_size = cfg.detector.get("min_size") or cfg.dataset.min_size
        max_size = cfg.detector.get("max_size") or cfg.dataset.max_size
        self.transform = GeneralizedRCNNTransform(int(min_size), int(max_size), IMAGE_MEAN, IMAGE_STD,
                                                  size_divisible=size_divisible)
        self.criterion = Criterion(cfg.loss, self.stages, cfg.schedule.get("ranking_group"),  # checks each loss first
                                   detector=cfg.detector.name)
        check_stage_overrides(cfg.loss, self.stages, cfg.detector.name)
        self.score_thresh = test_score_thresh(cfg)

    def stage_outputs(self, images, features: dict[str, Tensor], targets: list[dict]) -> list[StageOutput]:
        raise NotImplementedError

    def detect(self, images, features: dict[str, Tensor]) -> list[dict]:
        raise NotImplementedError

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        if self.training:
            # instance masks ([n, H, W] uint8) ride along when the dataset loads them; the transform resizes them
            targets = [{k: t[k] for k in ("boxes", "labels", "masks") if k in t} for t in targets]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        if self.training:
            terms: dict[str, Tensor] = {}
            stats: dict[str, float] = {}
            for out in self.stage_outputs(image_list, features, targets):
                stage_terms, stage_stats = self.criterion(out, len(targets))
                terms.update(stage_terms)
                stats.update(stage_stats)
            return terms, stats
        dets = self.detect(image_list, features)
        for det in dets:
            if "image_masks" in det and "masks" in det:
                raise RsdetError(f"{type(self).__name__}.detect returned both masks (RoI masks) and image_masks "
                                 "(whole-image masks); return one of them")
        dets = self.transform.postprocess(dets, image_list.image_sizes, original_sizes)  # boxes, RoI masks
        padded = tuple(image_list.tensors.shape[-2:])
        for det, size, original in zip(dets, image_list.image_sizes, original_sizes):
            if "image_masks" in det:
                det["masks"] = image_masks_to_original(det.pop("image_masks"), tuple(size), padded, original,
                                                       det["boxes"] if self.crop_image_masks_to_boxes else None)
        return dets
