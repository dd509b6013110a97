"""The criterion: one place that turns a stage's predictions and assignment into named loss terms.

Heads never know which loss, continuous label, instance weighting or task balancing was chosen, and
the criterion never knows which detector it trains: it is driven by the stages a detector declares
(``StageSpec``) and the ``StageOutput`` of each training step (docs/detectors.md). For the RS recipe
of one stage (paper Eq. 8 and §4; docs/detectors.md, "The RS recipe"):

    L = w_stage * ( L_R + L_S + λ_box * L_box ),   L_box = Σ_i w_i L_GIoU(i) / Σ_i w_i,

with continuous labels y_i = IoU(decoded prediction, GT), score weights w_i = max_c σ(s_ic) and the
value-based self-balance λ_box = (L_R + L_S) / L_box (supplementary Table S1). Every piece of that
line is a config value, so each ablation of the paper is a command-line override.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from rsdet import losses as L
from rsdet.errors import ConfigError
from rsdet.models.stage import StageOutput, StageSpec

#: Keys of a per-stage override block ``loss.<stage>.<key>`` (conf/loss_stages.yaml).
STAGE_KEYS = ("cls", "delta", "label", "label_min", "box", "box_weight", "weighting", "delta_loc", "balance",
              "box_normalizer", "focal_alpha", "focal_gamma", "aux_weight", "mask", "mask_weight")
#: mask losses of a mask stage (``loss.mask``); null picks dice for sigmoid (ranking) losses, bce for softmax CE
MASK_LOSSES = ("dice", "bce")
#: continuous labels computed from masks (rsdet.losses.continuous_labels; iou_dice is the mean's alias)
MASK_LABEL_KINDS = ("dice", "mean", "iou_dice", "iou+dice")


@dataclass
class StageLossConfig:
    """Loss settings of one stage, resolved from the ``loss`` config group."""

    cls: str
    delta: float
    label: str
    label_min: float
    box: str
    box_weight: float
    weighting: str
    balance: str
    delta_loc: float | None
    box_normalizer: str
    stage_weight: float
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    aux_weight: float = 1.0
    mask: str = "dice"
    mask_weight: float = 1.0


def stage_loss_config(cfg: Any, spec: StageSpec) -> StageLossConfig:
    """Merge ``loss.<stage>`` overrides (e.g. ``loss.rpn.box=l1``) over the loss-wide values."""
    stage_cfg = {k: v for k, v in dict(cfg.get(spec.name) or {}).items() if v is not None}

    def get(key, default=None):
        value = stage_cfg.get(key, cfg.get(key, default))
        return default if value is None else value

    cls = get("cls")
    if cls not in L.CLS_LOSSES:
        raise ConfigError(f"loss.cls={cls!r} is not one of {sorted(L.CLS_LOSSES)}")
    if L.classifier_of(cls) == "softmax":
        if spec.objectness:
            cls = "bce"  # one objectness logit: softmax CE over {object, background} is BCE
        elif spec.dense:
            raise ConfigError(
                f"loss.cls={cls} needs a softmax classifier with a background class, which the one-stage "
                f"stage '{spec.name}' does not have; use one of {sorted(_sigmoid_losses(spec))} "
                "(e.g. loss=focal for the standard one-stage baseline, loss=rs for Rank & Sort)")
    loss = L.classification_loss(cls)
    if loss.needs_boxes and not spec.boxes:
        raise ConfigError(
            f"loss.cls={cls} needs the box localisation error of every positive, but stage '{spec.name}' has no "
            f"box regression; use one of {sorted(_valid_losses(spec))}")
    delta = float(get("delta", 0.5))
    if delta < 0 or (delta == 0 and loss.positive_delta):
        need = f"> 0 ({cls} has no hard-step branch)" if loss.positive_delta else ">= 0"
        raise ConfigError(f"loss.delta={delta} is invalid for loss.cls={cls}: δ must be {need}")
    weights = cfg.get("stage_weights") or {}
    stage_weight = weights.get(spec.name)
    label = get("label", "binary")
    if label in MASK_LABEL_KINDS and not spec.masks:
        if "label" in stage_cfg:
            raise ConfigError(
                f"loss.{spec.name}.label={label} is a mask label (Dice of the predicted mask), but stage "
                f"'{spec.name}' predicts no masks; use binary or iou there")
        label = "iou"  # a mask detector's box-only stages (the RPN) keep IoU labels (docs/detectors.md)
    if not spec.boxes:
        label = _boxless_label(spec, label, "label" in stage_cfg)
        _check_boxless_options(spec, stage_cfg, get("weighting", "none"))
    mask = get("mask") or ("bce" if L.classifier_of(cls) == "softmax" else "dice")
    if mask not in MASK_LOSSES:
        raise ConfigError(f"loss.mask={mask!r} is not one of {MASK_LOSSES}")
    return StageLossConfig(
        cls=cls,
        delta=delta,
        label=label,
        label_min=float(get("label_min", 0.0)),
        box=get("box", "giou"),
        box_weight=float(get("box_weight", 1.0)),
        weighting=get("weighting", "none"),
        balance=get("balance", "constant"),
        delta_loc=get("delta_loc"),
        box_normalizer=get("box_normalizer", "weights"),
        stage_weight=float(spec.weight if stage_weight is None else stage_weight),
        focal_alpha=float(get("focal_alpha", 0.25)),
        focal_gamma=float(get("focal_gamma", 2.0)),
        aux_weight=float(get("aux_weight", 1.0)),
        mask=mask,
        mask_weight=float(get("mask_weight", 1.0)),
    )


def _valid_losses(spec: StageSpec) -> list[str]:
    """The recipe losses a stage can train with: no softmax loss on a one-stage head, no loss that
    needs boxes on a box-less stage."""
    return [name for name, loss in L.LOSSES.items()
            if loss.listed and (spec.boxes or not loss.needs_boxes)
            and not (spec.dense and not spec.objectness and loss.classifier == "softmax")]


def _sigmoid_losses(spec: StageSpec) -> list[str]:
    return [name for name in _valid_losses(spec) if L.classifier_of(name) == "sigmoid"]


#: continuous labels that need the box IoU of a positive (rsdet.losses.continuous_labels)
BOX_LABEL_KINDS = ("iou", "mean", "iou_dice", "iou+dice")
#: instance weightings computed from boxes (rsdet.losses.instance_weights)
BOX_WEIGHTINGS = ("iou", "centerness")
#: per-stage keys that only configure the box term
BOX_ONLY_KEYS = ("box", "box_weight")


def _boxless_label(spec: StageSpec, label: str, per_stage: bool) -> str:
    """The continuous label of a stage without boxes: the box IoU does not exist there, so the recipe's
    ``iou`` becomes the Dice of the predicted mask (binary on a stage without masks either; supplementary
    Table S6: SOLOv2 is trained with Dice labels "since it has no box regression head"). IoU asked for
    on this stage (``loss.<stage>.label``) or the IoU + Dice mean is a configuration error."""
    if label not in BOX_LABEL_KINDS:
        return label
    valid = "binary or dice" if spec.masks else "binary"
    if per_stage or label != "iou":
        raise ConfigError(
            f"loss{'.' + spec.name if per_stage else ''}.label={label} needs the box IoU of each positive, but stage "
            f"'{spec.name}' has no box regression; use {valid} (its default is {'dice' if spec.masks else 'binary'})")
    return "dice" if spec.masks else "binary"


def _check_boxless_options(spec: StageSpec, stage_cfg: dict, weighting: str) -> None:
    """Box-only options on a stage without boxes are configuration errors naming the valid choices."""
    if weighting in BOX_WEIGHTINGS:
        raise ConfigError(
            f"loss.weighting={weighting} weighs positives by their boxes, but stage '{spec.name}' has no box "
            "regression; use none, score or rank")
    for key in BOX_ONLY_KEYS:
        if key in stage_cfg:
            raise ConfigError(
                f"loss.{spec.name}.{key}={stage_cfg[key]} configures the box term, but stage '{spec.name}' has no box "
                "regression (no box term); set loss.mask / loss.mask_weight for its mask term instead")


def check_mask_labels(cfg: Any, stages: Sequence[StageSpec], detector: str | None) -> None:
    """``loss.label=dice|iou_dice`` needs a detector that predicts masks: on a box detector it is a
    configuration error (a mask detector's box-only stages fall back to IoU labels instead)."""
    label = cfg.get("label")
    if label in MASK_LABEL_KINDS and not any(s.masks for s in stages):
        # Imported here: rsdet.models.build imports the detectors, which import this module.
        from rsdet.models.build import available_detectors, detector_predicts_masks

        masks = " or ".join(f"detector={name}" for name in available_detectors() if detector_predicts_masks(name))
        raise ConfigError(
            f"loss.label={label} ranks positives by the Dice of their predicted masks, but "
            f"detector={detector or '?'} predicts boxes only; use loss.label=binary or iou, or a mask detector "
            f"({masks})")


def check_stage_overrides(cfg: Any, stages: Sequence[StageSpec], detector: str) -> None:
    """A per-stage block with values for a stage the detector does not have is a mistake (a typo or a
    key meant for another detector): say which stages exist."""
    names = {s.name for s in stages}
    for key in cfg:
        block = cfg.get(key)
        if not hasattr(block, "keys") or not block or not set(block.keys()) <= set(STAGE_KEYS):
            continue  # not a per-stage block (e.g. default_sampler, stage_weights)
        if key not in names and any(v is not None for v in dict(block).values()):
            set_keys = sorted(k for k, v in dict(block).items() if v is not None)
            raise ConfigError(
                f"loss.{key}.{set_keys[0]} is set, but detector={detector} has no stage '{key}'; its stages are "
                f"{', '.join(sorted(names))} (override them as loss.<stage>.<key>)")


class Criterion(nn.Module):
    """Computes the loss terms of every stage a detector declares.

    Holds the only training state the losses have (the task balancers, e.g. aLRP's epoch-based
    self-balance); it travels with the model's ``state_dict`` (``criterion._extra_state``).
    Classification losses are reached through their registry entry (``rsdet.losses.LOSSES``), so the
    criterion never branches on a loss name."""

    def __init__(self, loss_cfg: Any, stages: Sequence[StageSpec], group_images: int | None = None,
                 detector: str | None = None):
        super().__init__()
        self.specs = {spec.name: spec for spec in stages}
        check_mask_labels(loss_cfg, stages, detector)
        self.cfg = {spec.name: stage_loss_config(loss_cfg, spec) for spec in stages}
        if group_images is not None and int(group_images) < 1:
            raise ConfigError(f"schedule.ranking_group={group_images} must be a positive number of images or null")
        self.group_images = int(group_images) if group_images else None
        self.balancers = {}
        self.mask_balancers = {}
        self.losses = {}
        self.cls_losses = {}
        for stage, cfg in self.cfg.items():
            spec = self.specs[stage]
            loss = L.classification_loss(cfg.cls)
            if spec.masks:
                kind = cfg.balance if cfg.balance in ("value", "magnitude") and loss.balancer is None else "constant"
                self.mask_balancers[stage] = (L.build_task_balancer(kind, value=cfg.mask_weight) if kind == "constant"
                                              else L.build_task_balancer(kind))
            if loss.balancer is not None:
                self.balancers[stage] = loss.balancer(loss_cfg)
            elif not spec.boxes:
                pass  # no box term to balance
            elif cfg.balance == "constant":
                self.balancers[stage] = L.build_task_balancer("constant", value=cfg.box_weight)
            else:
                self.balancers[stage] = L.build_task_balancer(cfg.balance)
            self.losses[stage] = loss
            self.cls_losses[stage] = loss.bind(cfg)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict:
        return {stage: b.state_dict() for stage, b in self.balancers.items()}

    def set_extra_state(self, state: dict) -> None:
        for stage, b in self.balancers.items():
            if (state or {}).get(stage):
                b.load_state_dict(state[stage])

    # ------------------------------------------------------------------ main
    def forward(self, out: StageOutput, num_images: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Named loss terms of one stage (already multiplied by the stage weight) and its pos:neg stats.

        With ``group_images`` = g the batch is split into groups of g images, each group is ranked on
        its own and the terms are averaged — what the paper's 4 GPUs × 4 images setting computes,
        since the ranking list there is the per-GPU batch and data parallelism averages the gradients
        (docs/losses.md, "Ranking groups")."""
        if out.name not in self.cfg:
            raise ConfigError(f"stage '{out.name}' was not declared to the criterion (declared: {sorted(self.cfg)})")
        g = self.group_images
        if not g or num_images <= g:
            return self._stage_terms(out, num_images)
        num_groups = -(-num_images // g)
        group_of_row = out.image_index // g
        terms: dict[str, Tensor] = {}
        num_pos = num_instances = 0.0
        for k in range(num_groups):
            rows = torch.nonzero(group_of_row == k).flatten()
            part_terms, part_stats = self._stage_terms(out.select(rows, k * g), min(g, num_images - k * g))
            for name, value in part_terms.items():
                terms[name] = terms.get(name, 0.0) + value / num_groups
            num_pos += part_stats[f"{out.name}/num_pos"]
            num_instances += part_stats[f"{out.name}/num_pos"] + part_stats[f"{out.name}/num_neg"]
        return terms, self._ratios(out.name, int(num_instances), int(num_pos), out.num_classes)

    def _stage_terms(self, out: StageOutput, num_images: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        cfg = self.cfg[out.name]
        loss = self.losses[out.name]
        keep = torch.nonzero(out.gt_classes >= -1).flatten()  # samplers ran in the heads; drop ignored rows
        x = self._positives(cfg, out, keep)
        pos_rows = x.pos if len(keep) == len(out.gt_classes) else keep[x.pos]  # the positives' stage rows
        stats = self._ratios(out.name, len(x.classes), x.num_pos, out.num_classes)
        if loss.uses_labels:
            x.labels = L.continuous_labels(cfg.label, pred_boxes=x.pred_boxes, gt_boxes=x.gt, num=x.num_pos,
                                           min_value=cfg.label_min, **self._label_masks(cfg, out, pos_rows))
        result = loss(self.cls_losses[out.name], x)
        terms = dict(result.terms)
        if out.spec.boxes:
            terms["box"] = self._box_term(cfg, out.name, x, result)
        if out.masks is not None:
            terms["mask"] = self._mask_term(cfg, out, pos_rows, x, sum(v for k, v in terms.items() if k != "box"))
        for name, pred in out.aux.items():
            terms[name] = cfg.aux_weight * self._aux_term(name, pred[pos_rows], x, out.name)
        w = cfg.stage_weight
        named = {f"{out.name}_{k}": (w * v if w != 1.0 else v) for k, v in terms.items()}
        return named, stats

    # ------------------------------------------------------------------ pieces
    def _positives(self, cfg: StageLossConfig, out: StageOutput, keep: Tensor) -> L.StagePositives:
        """The stage's kept rows and, on a box stage, its positives' boxes and box losses. When no row is
        ignored the stage's tensors are used as they are (no copy, no index backward), and the positives'
        rows are gathered from them in one step (docs/performance.md)."""
        every_row = len(keep) == len(out.gt_classes)
        logits = out.cls_logits if every_row else out.cls_logits[keep]
        classes = out.gt_classes if every_row else out.gt_classes[keep]
        pos = torch.nonzero(classes >= 0).flatten()
        rows = pos if every_row else keep[pos]
        x = L.StagePositives(logits, classes, pos, out.num_classes, out.iou_threshold,
                             want_grad_l1=cfg.balance == "magnitude" and logits.requires_grad)
        if out.spec.boxes:
            x.deltas = out.box_deltas[rows]
            x.ref = out.ref_boxes[rows]
            x.gt = out.gt_boxes[rows]
            x.pred_boxes = out.box_coder.decode_single(x.deltas, x.ref)
            x.box_losses = self._box_loss_per_positive(cfg, x, out.box_coder)
        return x

    @staticmethod
    def _ratios(stage: str, num_instances: int, num_pos: int, num_classes: int) -> dict[str, float]:
        """pos:neg instance and task ratios (supplementary Table S7), as negatives per positive.

        A positive instance of a C-class sigmoid classifier is 1 positive and C - 1 negative tasks;
        a negative instance is C negative tasks."""
        num_neg = num_instances - num_pos
        neg_tasks = num_pos * (num_classes - 1) + num_neg * num_classes
        denom = max(num_pos, 1)
        return {
            f"{stage}/num_pos": float(num_pos),
            f"{stage}/num_neg": float(num_neg),
            f"{stage}/instance_neg_per_pos": num_neg / denom,
            f"{stage}/task_neg_per_pos": neg_tasks / denom,
        }

    @staticmethod
    def _label_masks(cfg: StageLossConfig, out: StageOutput, pos_rows: Tensor) -> dict:
        """The detached predicted / target masks of the positives (their stage rows ``pos_rows``), for
        Dice labels (mask stages)."""
        if out.masks is None or cfg.label not in MASK_LABEL_KINDS:
            return {}
        pred, gt = out.masks.label_masks(pos_rows)
        return {"pred_masks": pred, "gt_masks": gt}

    @staticmethod
    def _box_loss_per_positive(cfg: StageLossConfig, x: L.StagePositives, box_coder) -> Tensor:
        if cfg.box == "giou":
            return L.giou_loss(x.pred_boxes, x.gt, reduction="none")
        target_deltas = box_coder.encode_single(x.gt, x.ref)
        if cfg.box == "l1":
            return L.l1_loss(x.deltas, target_deltas, reduction="none").sum(-1)
        if cfg.box == "smooth_l1":
            return L.smooth_l1_loss(x.deltas, target_deltas, beta=1.0 / 9, reduction="none").sum(-1)
        raise ConfigError(f"loss.box={cfg.box!r} is not one of giou, l1, smooth_l1")

    @staticmethod
    def _weights(cfg: StageLossConfig, x: L.StagePositives) -> Tensor:
        """Instance weights of Table S1 / Eq. S18, S21 (all detached)."""
        kind = cfg.weighting
        kwargs: dict[str, Any] = {"num": x.num_pos}
        if kind == "score":
            kwargs["cls_logits"] = x.logits[x.pos]
        elif kind == "iou":
            kwargs.update(pred_boxes=x.pred_boxes.detach(), gt_boxes=x.gt)
        elif kind == "centerness":
            kwargs.update(anchor_centers=(x.ref[:, :2] + x.ref[:, 2:]) / 2, gt_boxes=x.gt)
        elif kind == "rank":
            logits = x.logits.detach()
            kwargs.update(pos_logits=logits[x.pos, x.classes[x.pos]],
                          ranks=L.positive_ranks(logits, x.sigmoid_targets(), delta=cfg.delta),
                          delta_loc=cfg.delta_loc)
        return L.instance_weights(kind, **kwargs)

    def _box_term(self, cfg: StageLossConfig, stage: str, x: L.StagePositives, cls: L.ClassificationTerms) -> Tensor:
        """The stage's box term: λ_box · L_box, L_box = Σ w_i L_box(i) / Σ w_i (or / #instances with
        ``box_normalizer=sampled``), λ_box from the stage's task balancer; a loss with its own
        localisation component (aLRP) gives that instead, balanced by its own balancer."""
        if cls.localisation is not None:
            if x.num_pos == 0:
                return cls.localisation
            return self.balancers[stage](sum(cls.terms.values()), cls.localisation) * cls.localisation
        if x.num_pos == 0:
            return x.deltas.sum() * 0.0
        if cfg.box_normalizer == "sampled":  # mmdet's standard heads: sum over positives / sampled count
            box = x.box_losses.sum() / max(len(x.classes), 1)
        else:
            box = L.weighted_mean(x.box_losses, self._weights(cfg, x))
        cls_total = sum(cls.terms.values())
        ctx = {}
        if cfg.balance == "magnitude":
            ctx = {"box_outputs": x.deltas}
            if cls.grad_l1 is not None:
                ctx["cls_grad_l1"] = cls.grad_l1
            else:
                ctx["cls_outputs"] = x.logits
        return self.balancers[stage](cls_total, box, **ctx) * box

    def _mask_term(self, cfg: StageLossConfig, out: StageOutput, pos_rows: Tensor, x: L.StagePositives,
                   cls_total: Tensor) -> Tensor:
        """The mask loss of a mask stage (docs/detectors.md, "Mask R-CNN", "YOLACT"): per mask Dice
        1 - 2Σpt / (Σp² + Σt² + 1e-5) of the sigmoid at the assigned class (zero outside the mask's
        ``crop``), or the per-pixel BCE averaged over the mask's pixels (over its ``crop`` when it has
        one); averaged with the weights of the stage's box loss (the score weight for RS) taken at
        ``weight_rows``; then balanced against the classification value like the box term."""
        m = out.masks
        if m.rows.numel() == 0:
            return m.logits.sum() * 0.0
        if cfg.mask == "dice":
            per_roi = L.dice_loss(m.probs(), m.targets)
        else:
            bce = nn.functional.binary_cross_entropy_with_logits(m.logits, m.targets, reduction="none")
            if m.crop is None:
                per_roi = bce.flatten(1).mean(1)
            else:
                crop = m.crop.to(bce.dtype)
                per_roi = (bce * crop).flatten(1).sum(1) / crop.flatten(1).sum(1).clamp(min=1.0)
        if x.num_pos == 0 or cfg.box_normalizer == "sampled":
            mask = per_roi.mean()
        else:
            # position of each stage row among the kept positives: the weights are indexed like them
            pos = x.pos
            where = torch.full((len(out.gt_classes),), -1, dtype=torch.long, device=pos.device)
            where[pos_rows] = torch.arange(pos.numel(), device=pos.device)
            mask = L.weighted_mean(per_roi, self._weights(cfg, x)[where[m.weight_rows]].to(per_roi.dtype))
        ctx = {"box_outputs": m.logits, "cls_outputs": x.logits} if isinstance(
            self.mask_balancers[out.name], L.MagnitudeSelfBalance) else {}
        return self.mask_balancers[out.name](cls_total, mask, **ctx) * mask

    @staticmethod
    def _aux_term(name: str, pred: Tensor, x: L.StagePositives, stage: str) -> Tensor:
        """Quality branches of the standard one-stage baselines, trained with BCE on positives only:
        ATSS's centerness (target: the anchor centre's centerness in its GT box) and PAA's IoU
        prediction (target: IoU of the detached decoded box with its GT). docs/detectors.md."""
        if x.gt is None:
            raise ConfigError(f"the {name} branch of stage '{stage}' is trained from its positives' boxes, but the "
                              "stage has no box regression; set detector.head.aux=none")
        if pred.numel() == 0:
            return pred.sum() * 0.0
        if name == "centerness":
            target = L.centerness_weights((x.ref[:, :2] + x.ref[:, 2:]) / 2, x.gt)
        elif name == "iou":
            target = L.box_iou_aligned(x.pred_boxes.detach(), x.gt)
        else:
            raise ConfigError(f"unknown auxiliary branch {name!r} (centerness | iou)")
        return L.binary_cross_entropy(pred.reshape(-1), target.to(pred.dtype))
