"""The criterion: one place that turns a stage's predictions and assignments into named loss terms.

Heads never know which loss, sampler, continuous label, instance weighting or task balancing was
chosen (architecture guide). For the RS recipe of one stage (spec §2.1, paper Eq. 8 + §4):

    L = w_stage * ( L_R + L_S + λ_box * L_box ),   L_box = Σ_i w_i L_GIoU(i) / Σ_i w_i,

with continuous labels y_i = IoU(decoded prediction, GT), score weights w_i = max_c σ(s_ic) and the
value-based self-balance λ_box = (L_R + L_S) / L_box (supplementary Table S1). Every piece of that
line is a config value, so each ablation of the paper is a command-line override.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from rsdet import losses as L
from rsdet.errors import ConfigError
from rsdet.models.rpn import StageOutput
from rsdet.models.samplers import sample_instances

SIGMOID_LOSSES = ("rs", "ap", "alrp", "focal", "bce")
SOFTMAX_LOSSES = ("ce",)


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


def stage_loss_config(cfg: Any, stage: str) -> StageLossConfig:
    """Merge ``loss.<stage>`` overrides (e.g. ``loss.rpn.box=l1``) over the loss-wide values."""
    stage_cfg = {k: v for k, v in dict(cfg.get(stage) or {}).items() if v is not None}

    def get(key, default=None):
        value = stage_cfg.get(key, cfg.get(key, default))
        return default if value is None else value

    cls = get("cls")
    if cls not in SIGMOID_LOSSES + SOFTMAX_LOSSES:
        raise ConfigError(f"loss.cls={cls!r} is not one of {SIGMOID_LOSSES + SOFTMAX_LOSSES}")
    delta = float(get("delta", 0.5))
    if delta < 0 or (delta == 0 and cls in ("ap", "alrp")):
        need = "> 0 (AP/aLRP have no hard-step branch)" if cls in ("ap", "alrp") else ">= 0"
        raise ConfigError(f"loss.delta={delta} is invalid for loss.cls={cls}: δ must be {need}")
    if stage == "rpn" and cls == "ce":
        cls = "bce"  # one objectness logit: softmax CE over {object, background} is BCE
    return StageLossConfig(
        cls=cls,
        delta=delta,
        label=get("label", "binary"),
        label_min=float(get("label_min", 0.0)),
        box=get("box", "giou"),
        box_weight=float(get("box_weight", 1.0)),
        weighting=get("weighting", "none"),
        balance=get("balance", "constant"),
        delta_loc=get("delta_loc"),
        box_normalizer=get("box_normalizer", "weights"),
        stage_weight=float(cfg.get("rpn_weight", 1.0)) if stage == "rpn" else 1.0,
        focal_alpha=float(get("focal_alpha", 0.25)),
        focal_gamma=float(get("focal_gamma", 2.0)),
    )


class Criterion:
    """Computes the loss terms of every stage. Holds the only training state losses have (the task
    balancers, e.g. aLRP's epoch-based self-balance), exposed through ``state_dict`` for checkpoints."""

    def __init__(self, loss_cfg: Any, samplers: dict[str, dict], group_images: int | None = None):
        self.cfg = {stage: stage_loss_config(loss_cfg, stage) for stage in ("rpn", "rcnn")}
        self.samplers = samplers
        if group_images is not None and int(group_images) < 1:
            raise ConfigError(f"schedule.ranking_group={group_images} must be a positive number of images or null")
        self.group_images = int(group_images) if group_images else None
        self.balancers = {}
        for stage, cfg in self.cfg.items():
            if cfg.cls == "alrp":
                balancer = L.build_task_balancer("alrp", init_weight=float(loss_cfg.get("alrp_init_weight", 50.0)),
                                                 period=int(loss_cfg.get("alrp_period", 500)))
            elif cfg.balance == "constant":
                balancer = L.build_task_balancer("constant", value=cfg.box_weight)
            else:
                balancer = L.build_task_balancer(cfg.balance)
            self.balancers[stage] = balancer

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {stage: b.state_dict() for stage, b in self.balancers.items()}

    def load_state_dict(self, state: dict) -> None:
        for stage, b in self.balancers.items():
            if state.get(stage):
                b.load_state_dict(state[stage])

    # ------------------------------------------------------------------ main
    def __call__(self, out: StageOutput, num_images: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Named loss terms of one stage (already multiplied by the stage weight) and its pos:neg stats.

        With ``group_images`` = g the batch is split into groups of g images, each group is ranked on
        its own and the terms are averaged — what the official 4 GPUs × 4 images setting computes,
        since the ranking set there is the per-GPU batch and DDP averages the gradients (spec §1.1,
        §6.3)."""
        g = self.group_images
        if not g or num_images <= g:
            return self._stage_terms(out, num_images)
        num_groups = -(-num_images // g)
        group_of_row = out.image_index // g
        terms: dict[str, Tensor] = {}
        num_pos = num_instances = 0.0
        for k in range(num_groups):
            rows = torch.nonzero(group_of_row == k).flatten()
            part = replace(out, cls_logits=out.cls_logits[rows], box_deltas=out.box_deltas[rows],
                           ref_boxes=out.ref_boxes[rows], gt_boxes=out.gt_boxes[rows],
                           gt_classes=out.gt_classes[rows], image_index=out.image_index[rows] - k * g)
            part_terms, part_stats = self._stage_terms(part, min(g, num_images - k * g))
            for name, value in part_terms.items():
                terms[name] = terms.get(name, 0.0) + value / num_groups
            num_pos += part_stats[f"{out.name}/num_pos"]
            num_instances += part_stats[f"{out.name}/num_pos"] + part_stats[f"{out.name}/num_neg"]
        return terms, self._ratios(out.name, int(num_instances), int(num_pos), out.num_classes)

    def _stage_terms(self, out: StageOutput, num_images: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        cfg = self.cfg[out.name]
        if out.name == "rpn":
            keep = sample_instances(out.gt_classes, out.image_index, num_images, **self.samplers["rpn"])
        else:  # the R-CNN head samples before RoIAlign; drop only ignored rows here
            keep = torch.nonzero(out.gt_classes >= -1).flatten()
        logits = out.cls_logits[keep]
        classes = out.gt_classes[keep]
        pos = torch.nonzero(classes >= 0).flatten()
        deltas = out.box_deltas[keep][pos]
        ref = out.ref_boxes[keep][pos]
        gt = out.gt_boxes[keep][pos]
        pred_boxes = out.box_coder.decode_single(deltas, ref)

        stats = self._ratios(out.name, len(classes), len(pos), out.num_classes)
        box_per_pos = self._box_loss_per_positive(cfg, pred_boxes, deltas, ref, gt, out)
        terms, cls_grad_l1 = self._classification(cfg, out, logits, classes, pos, pred_boxes, gt, box_per_pos)
        if "box" not in terms:
            terms["box"] = self._box_term(cfg, out.name, terms, logits, classes, pos, pred_boxes, deltas, ref, gt,
                                          box_per_pos, len(classes), cls_grad_l1)
        w = cfg.stage_weight
        named = {f"{out.name}_{k}": (w * v if w != 1.0 else v) for k, v in terms.items()}
        return named, stats

    # ------------------------------------------------------------------ pieces
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
    def _targets(logits: Tensor, classes: Tensor, pos: Tensor, values: Tensor | None) -> Tensor:
        """One-hot (M, C) target matrix; positives carry their label (spec §1.1 step 4)."""
        target = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
        if pos.numel():
            target[pos, classes[pos]] = 1.0 if values is None else values.float()
        return target

    def _classification(self, cfg, out, logits, classes, pos, pred_boxes, gt, box_per_pos):
        """Classification terms, plus the closed-form L1 norm of a ranking loss's gradient (for the
        magnitude-based self-balance) when there is one."""
        if cfg.cls == "ce":
            target = torch.where(classes >= 0, classes, torch.full_like(classes, out.num_classes))
            return {"cls": L.softmax_cross_entropy(logits, target)}, None
        binary = self._targets(logits, classes, pos, None)
        if cfg.cls == "bce":
            return {"cls": L.binary_cross_entropy(logits, binary.to(logits.dtype))}, None
        if cfg.cls == "focal":
            loss = L.sigmoid_focal_loss(logits, binary.to(logits.dtype), alpha=cfg.focal_alpha,
                                        gamma=cfg.focal_gamma, reduction="sum")
            return {"cls": loss / max(pos.numel(), 1)}, None
        if cfg.cls == "rs":
            labels = L.continuous_labels(cfg.label, pred_boxes=pred_boxes, gt_boxes=gt, num=pos.numel(),
                                         min_value=cfg.label_min)
            rank, sort = L.rank_sort_loss(logits, self._targets(logits, classes, pos, labels), delta=cfg.delta)
            grad_l1 = L.ranking_gradient_l1(rank) if cfg.balance == "magnitude" and logits.requires_grad else None
            return {"rank": rank, "sort": sort}, grad_l1
        if cfg.cls == "ap":
            loss = L.ap_loss(logits, binary, delta=cfg.delta)
            grad_l1 = L.ranking_gradient_l1(loss) if cfg.balance == "magnitude" and logits.requires_grad else None
            return {"cls": loss}, grad_l1
        if cfg.cls == "alrp":
            # E_loc = L_GIoU / (2 (1 - τ)) (spec §1.6): constants for the classification gradient,
            # differentiable in the localisation component.
            loc_errors = L.alrp_loc_errors(box_per_pos, tau=out.iou_threshold)
            result = L.alrp_loss(logits, binary, loc_errors.detach(), delta=cfg.delta)
            loc = L.alrp_loc_loss(loc_errors, result.rank, result.order)
            if pos.numel() == 0:
                return {"cls": result.cls_loss, "box": loc}, None
            weight = self.balancers[out.name](result.cls_loss, loc)
            return {"cls": result.cls_loss, "box": weight * loc}, None
        raise ConfigError(f"unknown loss.cls={cfg.cls!r}")

    def _box_loss_per_positive(self, cfg, pred_boxes, deltas, ref, gt, out) -> Tensor:
        if cfg.box == "giou":
            return L.giou_loss(pred_boxes, gt, reduction="none")
        target_deltas = out.box_coder.encode_single(gt, ref)
        if cfg.box == "l1":
            return L.l1_loss(deltas, target_deltas, reduction="none").sum(-1)
        if cfg.box == "smooth_l1":
            return L.smooth_l1_loss(deltas, target_deltas, beta=1.0 / 9, reduction="none").sum(-1)
        raise ConfigError(f"loss.box={cfg.box!r} is not one of giou, l1, smooth_l1")

    def _weights(self, cfg, logits, classes, pos, pred_boxes, ref, gt) -> Tensor:
        """Instance weights of Table S1 / Eq. S18, S21 (all detached)."""
        kind = cfg.weighting
        kwargs: dict[str, Any] = {"num": pos.numel()}
        if kind == "score":
            kwargs["cls_logits"] = logits[pos]
        elif kind == "iou":
            kwargs.update(pred_boxes=pred_boxes.detach(), gt_boxes=gt)
        elif kind == "centerness":
            kwargs.update(anchor_centers=(ref[:, :2] + ref[:, 2:]) / 2, gt_boxes=gt)
        elif kind == "rank":
            target = self._targets(logits, classes, pos, None)
            kwargs.update(pos_logits=logits.detach()[pos, classes[pos]],
                          ranks=L.positive_ranks(logits.detach(), target, delta=cfg.delta),
                          delta_loc=cfg.delta_loc)
        return L.instance_weights(kind, **kwargs)

    def _box_term(self, cfg, stage, terms, logits, classes, pos, pred_boxes, deltas, ref, gt, box_per_pos,
                  num_instances, cls_grad_l1) -> Tensor:
        if pos.numel() == 0:
            return deltas.sum() * 0.0
        if cfg.box_normalizer == "sampled":  # mmdet's standard heads: sum over positives / sampled count
            box = box_per_pos.sum() / max(num_instances, 1)
        else:
            box = L.weighted_mean(box_per_pos, self._weights(cfg, logits, classes, pos, pred_boxes, ref, gt))
        cls_total = sum(terms.values())
        ctx = {}
        if cfg.balance == "magnitude":
            ctx = {"box_outputs": deltas}
            if cls_grad_l1 is not None:
                ctx["cls_grad_l1"] = cls_grad_l1
            else:
                ctx["cls_outputs"] = logits
        return self.balancers[stage](cls_total, box, **ctx) * box
