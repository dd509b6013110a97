"""Classification losses by name (config group ``loss``), each reached through one call shape.

Every loss is registered here once, with the classifier it trains, the options it takes from the
stage's loss settings and a small *adapter*: a function ``adapter(fn, x) -> ClassificationTerms``
that receives the bound loss ``fn`` and one :class:`StagePositives` bundle (a stage's rows, its
positives, their targets, continuous labels and box losses) and returns the loss's named terms.
The criterion (``rsdet.models.criterion``) calls every loss the same way, so a new loss is one
``@register_loss`` block here plus its recipe in ``conf/loss/`` (docs/detectors.md, "The model layer").
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from rsdet.errors import ConfigError
from rsdet.losses.balance import TaskBalancer, build_task_balancer
from rsdet.losses.labels import vectorise_targets
from rsdet.losses.ranking import alrp_loc_errors, alrp_loc_loss, alrp_loss, ap_loss, rank_sort_loss, ranking_gradient_l1
from rsdet.losses.score import binary_cross_entropy, sigmoid_focal_loss, softmax_cross_entropy

__all__ = ["CLS_LOSSES", "CLASSIFIERS", "LOSSES", "ClassificationLoss", "ClassificationTerms", "StagePositives",
           "build_cls_loss", "classification_loss", "classifier_of", "register_loss"]


@dataclass
class StagePositives:
    """One stage's training rows (ignored rows dropped) and what its positives need, in one bundle.

    ``logits`` (M, K) and ``classes`` (M,) (class >= 0 positive, -1 negative) of the kept rows;
    ``pos`` (P,) the positives' indices into them, ascending; ``num_classes`` the stage's C (the
    background index of a softmax classifier with C + 1 logits); ``iou_threshold`` the assigner's
    positive IoU. On a box stage, per positive: ``deltas`` (P, 4) predicted and ``ref`` (P, 4)
    reference boxes, ``pred_boxes`` (P, 4) the decoded prediction, ``gt`` (P, 4) the matched ground
    truth and ``box_losses`` (P,) the stage's box loss (``loss.box``); all None on a box-less stage.
    ``labels`` (P,) are the continuous labels (set for a loss registered with ``uses_labels``);
    ``want_grad_l1`` asks a ranking loss for the L1 norm of its classification gradient (the
    magnitude-based self-balance, supplementary Eq. S17).
    """

    logits: Tensor
    classes: Tensor
    pos: Tensor
    num_classes: int
    iou_threshold: float = 0.5
    deltas: Tensor | None = None
    ref: Tensor | None = None
    pred_boxes: Tensor | None = None
    gt: Tensor | None = None
    box_losses: Tensor | None = None
    labels: Tensor | None = None
    want_grad_l1: bool = False

    @property
    def num_pos(self) -> int:
        return int(self.pos.numel())

    def sigmoid_targets(self, values: Tensor | None = None) -> Tensor:
        """(M, K) targets of a class-wise sigmoid loss: positives carry 1 (or ``values``, their
        continuous labels), negatives 0 (``rsdet.losses.vectorise_targets``)."""
        k = self.logits.shape[1]
        labels = torch.where(self.classes >= 0, self.classes, torch.full_like(self.classes, k))
        return vectorise_targets(labels, k, values=values)

    def class_targets(self) -> Tensor:
        """(M,) class indices of a softmax loss: the class of a positive, C (the background) otherwise."""
        return torch.where(self.classes >= 0, self.classes, torch.full_like(self.classes, self.num_classes))


@dataclass
class ClassificationTerms:
    """What an adapter returns: the named terms (``{"rank": .., "sort": ..}``, ``{"cls": ..}``), the
    L1 norm of the classification gradient when asked for and known in closed form, and, for a loss
    that brings its own localisation component (aLRP), that component: the criterion then uses it,
    balanced by the loss's own task balancer, as the stage's box term."""

    terms: dict[str, Tensor]
    grad_l1: Tensor | None = None
    localisation: Tensor | None = None


Adapter = Callable[[Callable, StagePositives], ClassificationTerms]


@dataclass(frozen=True)
class ClassificationLoss:
    """A registered classification loss.

    ``fn`` is the loss function, ``classifier`` the classifier it trains (``sigmoid``: C class-wise
    logits; ``softmax``: C + 1 with the background last), ``options`` maps keywords of ``fn`` to keys
    of the stage's loss settings (``{"delta": "delta"}``), ``fixed`` are keywords the recipe always
    passes. ``uses_labels``: ranks positives by continuous labels (``loss.label``).
    ``needs_boxes``: needs the positives' box losses (so no box-less stage can use it).
    ``positive_delta``: δ must be > 0. ``balancer(loss_cfg)``: the task balancer the loss brings
    (else the recipe's ``loss.balance``). ``listed``: offered in error messages as a recipe choice
    (``bce`` is the objectness form of a softmax loss, not a recipe)."""

    name: str
    fn: Callable
    classifier: str
    adapter: Adapter
    options: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    uses_labels: bool = False
    needs_boxes: bool = False
    positive_delta: bool = False
    balancer: Callable[[Any], TaskBalancer] | None = None
    listed: bool = True

    def bind(self, settings: Any) -> Callable:
        """``fn`` with its options taken from ``settings`` (attributes named by ``options``)."""
        return build_cls_loss(self.name, **{kw: getattr(settings, key) for kw, key in self.options.items()},
                              **self.fixed)

    def __call__(self, fn: Callable, x: StagePositives) -> ClassificationTerms:
        return self.adapter(fn, x)


#: name -> registered loss; CLS_LOSSES / CLASSIFIERS are its name -> function / classifier views
LOSSES: dict[str, ClassificationLoss] = {}
CLS_LOSSES: dict[str, Callable] = {}
CLASSIFIERS: dict[str, str] = {}


def register_loss(name: str, fn: Callable, classifier: str, **properties: Any) -> Callable[[Adapter], Adapter]:
    """Decorator of an adapter: register ``fn`` as ``loss.cls=<name>`` (``ClassificationLoss`` fields
    as keywords)."""
    if classifier not in ("sigmoid", "softmax"):
        raise ValueError(f"register_loss({name!r}): classifier must be sigmoid or softmax, got {classifier!r}")

    def wrap(adapter: Adapter) -> Adapter:
        if name in LOSSES:
            raise ValueError(f"classification loss {name!r} is registered twice")
        LOSSES[name] = ClassificationLoss(name, fn, classifier, adapter, **properties)
        CLS_LOSSES[name] = fn
        CLASSIFIERS[name] = classifier
        return adapter

    return wrap


def classification_loss(name: str) -> ClassificationLoss:
    """The registered loss ``name`` (a ConfigError naming the registered ones otherwise)."""
    if name not in LOSSES:
        raise ConfigError(f"unknown classification loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


def classifier_of(name: str) -> str:
    """``"sigmoid"`` or ``"softmax"``: the classifier the named classification loss trains."""
    return classification_loss(name).classifier


# Arguments that come from the batch, never from the config.
_DATA_ARGS = {"logits", "targets", "labels", "loc_errors"}


def build_cls_loss(name: str, **options: Any) -> Callable:
    """``functools.partial`` of the named loss with its options bound, validated up front.

    Example: ``build_cls_loss("rs", delta=0.5)(flat_logits, flat_targets)``.  Unknown names and
    unknown/misspelt options raise :class:`rsdet.errors.ConfigError` naming the valid ones.
    """
    fn = classification_loss(name).fn
    allowed = [p for p in inspect.signature(fn).parameters if p not in _DATA_ARGS]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ConfigError(f"loss={name}: unknown option(s) {bad}; valid options: {allowed}")
    return functools.partial(fn, **options)


# ---------------------------------------------------------------------- the losses
def _grad_l1(loss: Tensor, x: StagePositives) -> Tensor | None:
    return ranking_gradient_l1(loss) if x.want_grad_l1 else None


@register_loss("rs", rank_sort_loss, "sigmoid", options={"delta": "delta"}, uses_labels=True)
def _rank_sort(fn: Callable, x: StagePositives) -> ClassificationTerms:
    """RS Loss (paper Eq. 9/10) on every row × class, positives at their continuous label."""
    rank, sort = fn(x.logits, x.sigmoid_targets(x.labels))
    return ClassificationTerms({"rank": rank, "sort": sort}, grad_l1=_grad_l1(rank, x))


@register_loss("ap", ap_loss, "sigmoid", options={"delta": "delta"}, positive_delta=True)
def _average_precision(fn: Callable, x: StagePositives) -> ClassificationTerms:
    loss = fn(x.logits, x.sigmoid_targets())
    return ClassificationTerms({"cls": loss}, grad_l1=_grad_l1(loss, x))


def _alrp_balancer(loss_cfg: Any) -> TaskBalancer:
    return build_task_balancer("alrp", init_weight=float(loss_cfg.get("alrp_init_weight", 50.0)),
                               period=int(loss_cfg.get("alrp_period", 500)))


@register_loss("alrp", alrp_loss, "sigmoid", options={"delta": "delta"}, needs_boxes=True, positive_delta=True,
               balancer=_alrp_balancer)
def _alrp(fn: Callable, x: StagePositives) -> ClassificationTerms:
    """aLRP Loss: E_loc = L_GIoU / (2 (1 - τ)) (aLRP Loss, Eq. 7; docs/losses.md) is a constant for
    the classification gradient and differentiable in the localisation component."""
    loc_errors = alrp_loc_errors(x.box_losses, tau=x.iou_threshold)
    result = fn(x.logits, x.sigmoid_targets(), loc_errors.detach())
    return ClassificationTerms({"cls": result.cls_loss},
                               localisation=alrp_loc_loss(loc_errors, result.rank, result.order))


@register_loss("focal", sigmoid_focal_loss, "sigmoid", options={"alpha": "focal_alpha", "gamma": "focal_gamma"},
               fixed={"reduction": "sum"})
def _focal(fn: Callable, x: StagePositives) -> ClassificationTerms:
    """Focal loss summed over every row × class, normalised by the number of positives."""
    targets = x.sigmoid_targets()
    return ClassificationTerms({"cls": fn(x.logits, targets.to(x.logits.dtype)) / max(x.num_pos, 1)})


@register_loss("bce", binary_cross_entropy, "sigmoid", listed=False)
def _binary_cross_entropy(fn: Callable, x: StagePositives) -> ClassificationTerms:
    targets = x.sigmoid_targets()
    return ClassificationTerms({"cls": fn(x.logits, targets.to(x.logits.dtype))})


@register_loss("ce", softmax_cross_entropy, "softmax")
def _cross_entropy(fn: Callable, x: StagePositives) -> ClassificationTerms:
    return ClassificationTerms({"cls": fn(x.logits, x.class_targets())})
