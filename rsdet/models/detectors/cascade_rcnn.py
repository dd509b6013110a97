"""Cascade R-CNN: an RPN and a cascade of class-agnostic box stages, each trained at a higher IoU on the
boxes the previous stage refined (docs/detectors.md, "Cascade R-CNN"; paper supplementary Table S5).

Loss-bearing stages: ``rpn`` and ``stage1`` … ``stageN`` (N = len(detector.cascade.iou_thresholds),
3 by default). Every stage is an ordinary ``StageSpec``: the criterion gives each its own loss terms,
continuous labels and self-balance, and the loss recipe weighs them (``loss.stage_weights``: RS
[1, 1, 1], the standard Cascade with ``loss=ce`` [1, 0.5, 0.25]).

Training, per stage: the stage's proposals plus the GT boxes are matched at the stage's IoU and
sampled (``sampler.stageK``); its class-agnostic deltas decode the sampled rows into the next
stage's proposals (detached, clipped to the image), the rows that were appended GT boxes removed.
Test: each stage scores and refines the previous stage's boxes; the class scores are the activation
of the *mean of the stages' logits* (``detector.cascade.test_average=logits``; ``scores`` averages
the stages' probabilities instead), the boxes are the last stage's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image

from rsdet.errors import ConfigError
from rsdet.losses import classifier_of
from rsdet.models.backbone import build_backbone
from rsdet.models.criterion import stage_loss_config
from rsdet.models.detectors.base import Detector
from rsdet.models.heads.roi_box import RoIHead
from rsdet.models.heads.rpn import RPN
from rsdet.models.registry import register
from rsdet.models.samplers import resolve_stage_sampler
from rsdet.models.stage import StageOutput, StageSpec

TEST_AVERAGES = ("logits", "scores")


def coder_weights_from_stds(stds) -> tuple[float, float, float, float]:
    """torchvision's BoxCoder weights are the inverse of the delta standard deviations."""
    return tuple(1.0 / float(s) for s in stds)


def cascade_stage_specs(cascade_cfg: Any, num_classes: int) -> list[StageSpec]:
    """``stage1`` … ``stageN`` at the configured IoU thresholds, checked against the per-stage stds."""
    ious = [float(x) for x in cascade_cfg.iou_thresholds]
    stds = [list(s) for s in cascade_cfg.box_stds]
    if not ious:
        raise ConfigError("detector.cascade.iou_thresholds is empty: give one IoU per stage, e.g. [0.5, 0.6, 0.7]")
    if len(stds) != len(ious) or any(len(s) != 4 or min(float(v) for v in s) <= 0 for s in stds):
        raise ConfigError(
            f"detector.cascade.box_stds={stds} must hold one list of 4 positive delta stds per stage "
            f"({len(ious)} stages from detector.cascade.iou_thresholds={ious})")
    if any(not 0.0 < iou <= 1.0 for iou in ious):
        raise ConfigError(f"detector.cascade.iou_thresholds={ious}: every threshold must be in (0, 1]")
    return [StageSpec(f"stage{k + 1}", num_classes, iou_threshold=iou) for k, iou in enumerate(ious)]


def refine_boxes(head: RoIHead, deltas: Tensor, boxes: Tensor, image_index: Tensor, image_sizes,
                 keep: Tensor | None = None) -> list[Tensor]:
    """The next stage's proposals: ``boxes`` (M, 4) moved by the stage's class-agnostic ``deltas``
    (detached), clipped to their image, rows where ``keep`` is False dropped; one tensor per image."""
    with torch.no_grad():
        refined = head.box_coder.decode_single(deltas.detach(), boxes)
        if keep is None:
            keep = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
        return [clip_boxes_to_image(refined[keep & (image_index == i)], size) for i, size in enumerate(image_sizes)]


@register("cascade_rcnn")
class CascadeRCNN(Detector):
    def __init__(self, cfg: Any, num_classes: int):
        det = cfg.detector
        cascade = det.cascade
        rpn_spec = StageSpec("rpn", 1, iou_threshold=float(det.rpn.fg_iou), objectness=True)
        specs = cascade_stage_specs(cascade, num_classes)
        super().__init__(cfg, num_classes, [rpn_spec, *specs])
        self.test_average = str(cascade.get("test_average", "logits"))
        if self.test_average not in TEST_AVERAGES:
            raise ConfigError(f"detector.cascade.test_average={self.test_average!r} is not one of {TEST_AVERAGES}")
        classifiers = {spec.name: classifier_of(stage_loss_config(cfg.loss, spec).cls) for spec in specs}
        if len(set(classifiers.values())) > 1:
            raise ConfigError(
                f"the cascade stages need one kind of classifier to average their scores at test, got {classifiers}; "
                "use sigmoid losses (rs, ap, alrp, focal) or softmax (ce) on every stage")
        self.backbone = build_backbone(det.backbone)
        channels = self.backbone.out_channels
        self.rpn = RPN(det.rpn, channels, tuple(det.box_coder_weights), rpn_spec,
                       resolve_stage_sampler(cfg.sampler, cfg.loss, "rpn"))
        featmaps = [str(i) for i in range(len(det.backbone.returned_stages))]
        self.stage_heads = nn.ModuleList(
            RoIHead(det.roi, channels, num_classes, classifiers[spec.name], cfg.loss.get("prior_prob"),
                    coder_weights_from_stds(stds), featmaps, spec,
                    resolve_stage_sampler(cfg.sampler, cfg.loss, spec.name), class_agnostic=True)
            for spec, stds in zip(specs, cascade.box_stds))

    def stage_outputs(self, images, features, targets):
        proposals, rpn_out = self.rpn(images, features, targets)
        return [rpn_out, *self.cascade_train(features, [p.detach() for p in proposals], images.image_sizes, targets)]

    def cascade_train(self, features, proposals: list[Tensor], image_sizes, targets) -> list[StageOutput]:
        """One ``StageOutput`` per box stage; each stage trains on the boxes the previous one refined."""
        outputs = []
        last = len(self.stage_heads) - 1
        for k, head in enumerate(self.stage_heads):
            out, rows = head.train_step(features, proposals, image_sizes, targets)
            outputs.append(out)
            if k < last:  # the GT boxes appended as proposals leave with their refined copies
                proposals = refine_boxes(head, out.box_deltas, rows.boxes, rows.image_index, image_sizes,
                                         keep=~rows.is_gt)
        return outputs

    def detect(self, images, features):
        proposals, _ = self.rpn(images, features)
        return self.cascade_test(features, proposals, images.image_sizes)

    @torch.no_grad()
    def cascade_test(self, features, proposals: list[Tensor], image_sizes) -> list[dict]:
        """Each stage scores and refines the previous stage's boxes; scores averaged over the stages,
        boxes of the last stage, then the last head's multiclass NMS."""
        counts = [len(p) for p in proposals]
        image_index = torch.cat([torch.full((n,), i, dtype=torch.long, device=p.device)
                                 for i, (n, p) in enumerate(zip(counts, proposals))])
        per_stage = []
        last = len(self.stage_heads) - 1
        for k, head in enumerate(self.stage_heads):
            logits, deltas = head._predict(features, proposals, image_sizes)
            per_stage.append(logits if self.test_average == "logits" else head.scores(logits))
            if k < last:
                proposals = refine_boxes(head, deltas, torch.cat(proposals), image_index, image_sizes)
        head = self.stage_heads[-1]
        scores = average_stage_scores(per_stage, head.scores if self.test_average == "logits" else None)
        return head.postprocess(head.decode(deltas, proposals), scores, counts, image_sizes, self.score_thresh)


def average_stage_scores(per_stage: list[Tensor], activation=None) -> Tensor:
    """The mean over stages of ``per_stage`` (N, K) tensors, then ``activation`` if given: the RS recipe
    averages the three stages' logits and applies the sigmoid once."""
    mean = torch.stack(per_stage).mean(0)
    return activation(mean) if activation is not None else mean
