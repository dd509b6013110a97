"""Building a detector by name: ``build_detector(cfg, num_classes)`` picks ``cfg.detector.name``.

Importing ``rsdet.models.detectors`` registers every detector (``rsdet.models.registry``); no list
of detector modules is kept here (docs/detectors.md, "Adding a detector").
"""

from __future__ import annotations

from typing import Any

from torch import nn

import rsdet.models.detectors  # noqa: F401  (registers every detector)
from rsdet.errors import ConfigError
from rsdet.models.registry import DETECTORS, register

__all__ = ["DETECTORS", "register", "build_detector", "detector_class", "detector_predicts_masks",
           "available_detectors"]


def detector_class(name: str) -> type:
    """The class registered as ``detector=<name>`` (a ConfigError listing the others if none is)."""
    if name not in DETECTORS:
        raise ConfigError(f"detector={name!r} is not available; choose one of {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name]


def build_detector(cfg: Any, num_classes: int) -> nn.Module:
    """Build the detector named by ``cfg.detector.name`` for ``num_classes`` foreground classes."""
    from rsdet.models.torchvision_init import prepare_for_init  # detector.init: structure only, no file read

    return prepare_for_init(detector_class(cfg.detector.name)(cfg, num_classes), cfg)


def detector_predicts_masks(name: str) -> bool:
    """Whether ``detector=<name>`` returns instance masks with its detections (``Detector.predicts_masks``)."""
    return bool(getattr(detector_class(name), "predicts_masks", False))


def available_detectors() -> list[str]:
    return sorted(DETECTORS)
