"""What a detector declares about each loss-bearing stage, and what a stage hands to the criterion.

A detector lists its stages once (``StageSpec``: name, weight, classifier, IoU threshold) and each
training step returns one ``StageOutput`` per stage. The criterion is driven by these two objects
alone, so it never needs to know which detector it trains (docs/detectors.md, "The model layer").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils

from rsdet.errors import RsdetError

#: Row labels used by every assigner and sampler: a class index >= 0 marks a positive.
NEGATIVE = -1
IGNORED = -2


@dataclass(frozen=True)
class StageSpec:
    """A loss-bearing stage as its detector declares it.

    ``name`` keys the stage's loss terms (``<name>_rank``, ...), its per-stage loss overrides
    (``loss.<name>.<key>``) and its sampler (``sampler.<name>``). ``weight`` multiplies every term of
    the stage unless the loss recipe names another (``loss.stage_weights.<name>``).
    ``objectness`` marks a class-agnostic stage with one sigmoid logit whatever the loss (an RPN): a
    softmax loss there becomes binary cross-entropy. ``iou_threshold`` is the assigner's positive
    IoU threshold (aLRP's localisation error is normalised by it, paper Eq. 7 of aLRP Loss).
    ``dense`` marks one-stage heads, on which only sigmoid-based losses make sense.
    ``masks`` marks a stage whose positives also train a mask predictor (Mask R-CNN's ``rcnn``,
    YOLACT's ``head``): its ``StageOutput`` carries a ``MaskPrediction``, the criterion adds a mask term
    and mask labels (``loss.label=dice|iou_dice``) apply.
    ``boxes=False`` marks a stage without box regression (a SOLO-style head that predicts masks
    only): its ``StageOutput`` has no box fields, the criterion adds no ``<stage>_box`` term, the
    continuous label defaults to the Dice of the predicted masks and box-only loss options on the
    stage are configuration errors (docs/detectors.md, "The model layer").
    """

    name: str
    num_classes: int
    iou_threshold: float = 0.5
    weight: float = 1.0
    objectness: bool = False
    dense: bool = False
    masks: bool = False
    boxes: bool = True


@dataclass
class MaskPrediction:
    """The mask branch's part of a stage's training step, the one mask interface of every mask
    detector (docs/detectors.md, "Mask R-CNN" and "YOLACT").

    ``logits`` (Q, S, S) are the mask logits (at the assigned class) of the Q rows ``rows`` (indices
    into the stage's rows, ascending) that train the mask predictor; ``targets`` (Q, S, S) their
    binary ground-truth masks in the same frame (Mask R-CNN: the RoI; YOLACT: the whole image at
    prototype resolution). ``weight_rows`` (Q,) say whose instance weight each mask loss gets:
    ``rows`` itself, or, reproducing the official Mask R-CNN code's ordering, the same rows in the
    order the cap drew them. ``crop`` (Q, S, S), when set, is the 0/1 region each mask covers (YOLACT:
    the GT box grown by a prototype pixel): the predicted probabilities are zero outside it and the
    per-pixel BCE is averaged over it; None means the whole map (Mask R-CNN's RoI masks).
    ``label_probs`` / ``label_targets`` (M, S, S), per stage row, hold the detached predicted
    probabilities and targets of every positive when the stage's continuous label needs a mask Dice
    and ``rows`` does not cover every positive (Mask R-CNN's RoI cap; zeros elsewhere), else None:
    the Dice labels then come from the mask rows themselves (``label_masks``).
    """

    logits: Tensor
    targets: Tensor
    rows: Tensor
    weight_rows: Tensor
    label_probs: Tensor | None = None
    label_targets: Tensor | None = None
    crop: Tensor | None = None

    def probs(self) -> Tensor:
        """(Q, S, S) mask probabilities: sigmoid of the logits, zero outside ``crop``."""
        p = self.logits.sigmoid()
        return p if self.crop is None else p * self.crop.to(p.dtype)

    @torch.no_grad()
    def label_masks(self, stage_rows: Tensor) -> tuple[Tensor, Tensor]:
        """Detached predicted probabilities and targets (len(stage_rows), S, S) of the stage rows
        ``stage_rows`` (positives), for the Dice continuous labels."""
        if self.label_probs is not None:
            return self.label_probs[stage_rows], self.label_targets[stage_rows]
        index = torch.searchsorted(self.rows, stage_rows).clamp(max=max(len(self.rows) - 1, 0))
        if len(stage_rows) and (not len(self.rows) or bool((self.rows[index] != stage_rows).any())):
            raise RsdetError("MaskPrediction.label_masks: a positive has no mask row; a detector that trains its mask "
                             "branch on part of the positives must fill label_probs / label_targets")
        return self.probs()[index], self.targets[index]

    def select(self, rows: Tensor, num_rows: int) -> "MaskPrediction | None":
        """Restricted to the stage rows ``rows`` (of ``num_rows``), renumbered; mask rows whose own row
        or weight row falls outside are dropped."""
        new_index = torch.full((num_rows,), -1, dtype=torch.long, device=rows.device)
        new_index[rows] = torch.arange(len(rows), device=rows.device)
        keep = (new_index[self.rows] >= 0) & (new_index[self.weight_rows] >= 0)
        return MaskPrediction(
            logits=self.logits[keep], targets=self.targets[keep], rows=new_index[self.rows[keep]],
            weight_rows=new_index[self.weight_rows[keep]],
            label_probs=None if self.label_probs is None else self.label_probs[rows],
            label_targets=None if self.label_targets is None else self.label_targets[rows],
            crop=None if self.crop is None else self.crop[keep])


#: the box fields of a ``StageOutput``: all set on a box stage, all None on a box-less one
BOX_FIELDS = ("box_deltas", "ref_boxes", "gt_boxes", "box_coder")


@dataclass
class StageOutput:
    """One stage's predictions and assignment, flattened over the images of the batch.

    ``image_index`` (M,) says which image each row belongs to (ranking groups split by it).
    ``cls_logits`` is (M, K): K = 1 for an objectness stage, C (sigmoid) or C + 1 (softmax,
    background last) otherwise. ``gt_classes`` is (M,): the assigned class in [0, C) for a
    positive, ``NEGATIVE`` (-1) or ``IGNORED`` (-2). ``box_deltas`` (M, 4) are the deltas of the
    assigned class, relative to ``ref_boxes`` (anchors or proposals) under ``box_coder``;
    ``gt_boxes`` are the matched ground truths (undefined for negatives). The four box fields are
    required on a box stage and must be None on a stage declared ``StageSpec(boxes=False)``.
    ``aux`` holds optional extra per-row predictions a recipe trains (e.g. ATSS's centerness logit,
    (M,)); ``masks`` the mask branch's predictions and targets on a mask stage.

    A box-less stage is built with keywords:
    ``StageOutput(spec, cls_logits=..., gt_classes=..., image_index=..., masks=...)``.
    """

    spec: StageSpec
    cls_logits: Tensor
    box_deltas: Tensor | None = None
    ref_boxes: Tensor | None = None
    gt_boxes: Tensor | None = None
    gt_classes: Tensor = None  # required (checked below); a default only so the box fields may be left out
    box_coder: det_utils.BoxCoder | None = None
    image_index: Tensor = None  # required, as gt_classes
    aux: dict[str, Tensor] = field(default_factory=dict)
    masks: MaskPrediction | None = None

    def __post_init__(self) -> None:
        if self.gt_classes is None or self.image_index is None:
            raise RsdetError(f"StageOutput of stage '{self.spec.name}' needs gt_classes and image_index")
        given = [name for name in BOX_FIELDS if getattr(self, name) is not None]
        if self.spec.boxes and len(given) != len(BOX_FIELDS):
            missing = [name for name in BOX_FIELDS if name not in given]
            raise RsdetError(f"StageOutput of box stage '{self.spec.name}' lacks {', '.join(missing)}; a stage "
                             "without box regression is declared StageSpec(..., boxes=False)")
        if not self.spec.boxes and given:
            raise RsdetError(f"stage '{self.spec.name}' is declared without boxes (StageSpec.boxes=False) but its "
                             f"StageOutput sets {', '.join(given)}")
        if self.masks is not None and not self.spec.masks:
            raise RsdetError(f"stage '{self.spec.name}' carries a MaskPrediction but is not declared a mask stage "
                             "(StageSpec(..., masks=True))")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def iou_threshold(self) -> float:
        return self.spec.iou_threshold

    def select(self, rows: Tensor, image_offset: int = 0) -> "StageOutput":
        """The same stage restricted to ``rows`` (image indices shifted down by ``image_offset``)."""
        def rows_of(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[rows]

        return replace(self, cls_logits=self.cls_logits[rows], box_deltas=rows_of(self.box_deltas),
                       ref_boxes=rows_of(self.ref_boxes), gt_boxes=rows_of(self.gt_boxes),
                       gt_classes=self.gt_classes[rows], image_index=self.image_index[rows] - image_offset,
                       aux={k: v[rows] for k, v in self.aux.items()},
                       masks=None if self.masks is None else self.masks.select(rows, len(self.gt_classes)))
