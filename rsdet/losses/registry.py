"""Config-driven construction of classification losses by name (config group ``loss``)."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from rsdet.errors import ConfigError
from rsdet.losses.ranking import alrp_loss, ap_loss, rank_sort_loss
from rsdet.losses.score import binary_cross_entropy, sigmoid_focal_loss, softmax_cross_entropy

__all__ = ["CLS_LOSSES", "CLASSIFIERS", "build_cls_loss", "classifier_of"]

#: name -> function.  Return types differ: rs -> RankSortOutput(ranking_loss, sorting_loss);
#: ap, focal, bce, ce -> tensor; alrp -> ALRPOutput(cls_loss, rank, order) (needs loc_errors).
CLS_LOSSES: dict[str, Callable] = {
    "rs": rank_sort_loss,
    "ap": ap_loss,
    "alrp": alrp_loss,
    "focal": sigmoid_focal_loss,
    "bce": binary_cross_entropy,
    "ce": softmax_cross_entropy,
}

#: name -> the classifier the loss needs: class-wise sigmoid (C logits, no background) or softmax
#: over C classes + background. Detectors build their heads from this (docs/detectors.md).
CLASSIFIERS: dict[str, str] = {
    "rs": "sigmoid",
    "ap": "sigmoid",
    "alrp": "sigmoid",
    "focal": "sigmoid",
    "bce": "sigmoid",
    "ce": "softmax",
}


def classifier_of(name: str) -> str:
    """``"sigmoid"`` or ``"softmax"``: the classifier the named classification loss trains."""
    if name not in CLASSIFIERS:
        raise ConfigError(f"unknown classification loss {name!r}; choose one of {sorted(CLS_LOSSES)}")
    return CLASSIFIERS[name]


# Arguments that come from the batch, never from the config.
_DATA_ARGS = {"logits", "targets", "labels", "loc_errors"}


def build_cls_loss(name: str, **options: Any) -> Callable:
    """``functools.partial`` of the named loss with its options bound, validated up front.

    Example: ``build_cls_loss("rs", delta=0.5)(flat_logits, flat_targets)``.  Unknown names and
    unknown/misspelt options raise :class:`rsdet.errors.ConfigError` naming the valid ones.
    """
    if name not in CLS_LOSSES:
        raise ConfigError(f"unknown classification loss {name!r}; choose one of {sorted(CLS_LOSSES)}")
    fn = CLS_LOSSES[name]
    allowed = [p for p in inspect.signature(fn).parameters if p not in _DATA_ARGS]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ConfigError(f"loss={name}: unknown option(s) {bad}; valid options: {allowed}")
    return functools.partial(fn, **options)
