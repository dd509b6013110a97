"""The criterion: one place that turns a stage's predictions and assignments into named loss terms.

Heads never know which loss, sampler, continuous label, instance weighting or task balancing was
chosen (architecture guide). For the RS recipe of one stage (spec §2.1, paper Eq. 8 + §4):

    L = w_stage * ( L_R + L_S + λ_box * L_box ),   L_box = Σ_i w_i L_GIoU(i) / Σ_i w_i,

with continuous labels y_i = IoU(decoded prediction, GT), score weights w_i = max_c σ(s_ic) and the
value-based self-balance λ_box = (L_R + L_S) / L_box (supplementary Table S1). Every piece of that
line is a config value, so each ablation of the paper is a command-line override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou  # noqa: F401  (documented equivalence, see _aligned_iou)

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
    box: str
    box_weight: float
    weighting: str
    balance: str
    delta_loc: float | None
    box_normalizer: str
    stage_weight: float
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    extra: dict = field(default_factory=dict)


def stage_loss_config(cfg: Any, stage: str) -> StageLossConfig:
    """Merge ``loss.<stage>`` overrides (e.g. ``loss.rpn.box=l1``) over the loss-wide values."""
    stage_cfg = dict(cfg.get(stage) or {})

    def get(key, default=None):
        return stage_cfg.get(key, cfg.get(key, default))

    cls = get("cls")
    if cls not in SIGMOID_LOSSES + SOFTMAX_LOSSES:
        raise ConfigError(f"loss.cls={cls!r} is not one of {SIGMOID_LOSSES + SOFTMAX_LOSSES}")
    if stage == "rpn" and cls == "ce":
        cls = "bce"  # one objectness logit: softmax CE over {object, background} is BCE
    return StageLossConfig(
        cls=cls,
        delta=float(get("delta", 0.5)),
        label=get("label", "binary"),
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


def _aligned_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of paired boxes (diagonal of torchvision's box_iou without the N×N matrix)."""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return inter / (area_a + area_b - inter).clamp(min=1e-12)


class Criterion:
    """Computes the loss terms of every stage. Holds the only training state losses have
    (aLRP's epoch-based self-balance), exposed through ``state_dict`` for checkpoints."""

    def __init__(self, loss_cfg: Any, samplers: dict[str, dict]):
        self.cfg = {stage: stage_loss_config(loss_cfg, stage) for stage in ("rpn", "rcnn")}
        self.samplers = samplers
        self.alrp_balance = {
            stage: L.ALRPSelfBalance(init_weight=float(loss_cfg.get("alrp_init_weight", 50.0)),
                                     period=int(loss_cfg.get("alrp_period", 500)))
            for stage in ("rpn", "rcnn")
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {stage: sb.state_dict() for stage, sb in self.alrp_balance.items()}

    def load_state_dict(self, state: dict) -> None:
        for stage, sb in self.alrp_balance.items():
            if stage in state:
                sb.load_state_dict(state[stage])

    # ------------------------------------------------------------------ main
    def __call__(self, out: StageOutput, num_images: int) -> tuple[dict[str, Tensor], dict[str, float]]:
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
        with torch.no_grad():
            ious = _aligned_iou(pred_boxes.detach().float(), gt.float())

        stats = self._ratios(out.name, len(classes), len(pos), out.num_classes)
        box_per_pos = self._box_loss_per_positive(cfg, pred_boxes, deltas, ref, gt, out)
        terms = self._classification(cfg, out, logits, classes, pos, ious, box_per_pos)
        if "box" not in terms:
            terms["box"] = self._box_term(cfg, terms, logits, pos, ious, box_per_pos, len(classes), deltas, ref, gt, out)
        w = cfg.stage_weight
        named = {f"{out.name}_{k}": (w * v if w != 1.0 else v) for k, v in terms.items()}
        return named, stats

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _ratios(stage: str, num_instances: int, num_pos: int, num_classes: int) -> dict[str, float]:
        """pos:neg instance and task ratios (supplementary Table S7), as negatives per positive."""
        num_neg = num_instances - num_pos
        neg_tasks = num_pos * (num_classes - 1) + num_neg * num_classes
        denom = max(num_pos, 1)
        return {
            f"{stage}/num_pos": float(num_pos),
            f"{stage}/num_neg": float(num_neg),
            f"{stage}/instance_neg_per_pos": num_neg / denom,
            f"{stage}/task_neg_per_pos": neg_tasks / denom,
        }

    def _targets(self, cfg: StageLossConfig, logits: Tensor, classes: Tensor, pos: Tensor, ious: Tensor,
                 binary: bool) -> Tensor:
        """One-hot (M, C) target matrix; positives carry their continuous label (spec §1.1 step 4)."""
        target = torch.zeros_like(logits, dtype=torch.float32)
        if pos.numel():
            value = torch.ones_like(ious) if binary else L.continuous_labels(cfg.label, ious=ious)
            target[pos, classes[pos]] = value.float()
        return target

    def _classification(self, cfg, out, logits, classes, pos, ious, box_per_pos) -> dict[str, Tensor]:
        if cfg.cls == "ce":
            target = torch.where(classes >= 0, classes, torch.full_like(classes, out.num_classes))
            return {"cls": F.cross_entropy(logits, target)}
        if cfg.cls == "bce":
            target = self._targets(cfg, logits, classes, pos, ious, binary=True)
            return {"cls": F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))}
        if cfg.cls == "focal":
            target = self._targets(cfg, logits, classes, pos, ious, binary=True)
            loss = L.sigmoid_focal_loss(logits, target.to(logits.dtype), alpha=cfg.focal_alpha,
                                        gamma=cfg.focal_gamma, reduction="sum")
            return {"cls": loss / max(pos.numel(), 1)}
        if cfg.cls == "rs":
            target = self._targets(cfg, logits, classes, pos, ious, binary=cfg.label == "binary")
            rank, sort = L.rank_sort_loss(logits, target, delta=cfg.delta)
            return {"rank": rank, "sort": sort}
        if cfg.cls == "ap":
            target = self._targets(cfg, logits, classes, pos, ious, binary=True)
            return {"cls": L.ap_loss(logits, target, delta=cfg.delta)}
        if cfg.cls == "alrp":
            # E_loc = L_GIoU / (2 (1 - τ)) (spec §1.6); constants for the classification gradient
            target = self._targets(cfg, logits, classes, pos, ious, binary=True)
            scale = 2.0 * (1.0 - out.iou_threshold)
            loc_errors = box_per_pos / scale
            result = L.alrp_loss(logits, target, loc_errors.detach(), delta=cfg.delta)
            cls_value, rank, order = result[0], result[1], result[2]
            loc = L.alrp_loc_loss(loc_errors, rank, order)
            balance = self.alrp_balance[out.name]
            balance.update(cls_value.detach(), loc.detach())
            return {"cls": cls_value, "box": balance.weight * loc}
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

    def _box_term(self, cfg, terms, logits, pos, ious, box_per_pos, num_instances, deltas, ref, gt, out) -> Tensor:
        if pos.numel() == 0:
            return deltas.sum() * 0.0
        if cfg.box_normalizer == "sampled":  # mmdet's standard heads: sum over positives / sampled count
            box = box_per_pos.sum() / max(num_instances, 1)
        else:
            weights = L.instance_weights(
                cfg.weighting,
                logits=logits[pos].detach(),
                ious=ious,
                pred_boxes=None,
                anchors=ref,
                gt_boxes=gt,
                all_logits=logits.detach(),
                positive_index=pos,
                delta=cfg.delta,
                delta_loc=cfg.delta_loc,
            )
            box = L.weighted_mean(box_per_pos, weights)
        cls_total = sum(terms.values())
        if cfg.balance == "constant":
            lam = cfg.box_weight
        elif cfg.balance == "value":
            lam = L.value_self_balance(cls_total, box)
        elif cfg.balance == "magnitude":
            lam = L.magnitude_self_balance(cls_total, box, logits, deltas)
        else:
            raise ConfigError(f"loss.balance={cfg.balance!r} is not one of constant, value, magnitude")
        return lam * box
