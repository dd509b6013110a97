"""The detector registry: ``detector.name`` -> class; ``build_detector(cfg, num_classes)``."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from rsdet.errors import ConfigError

DETECTORS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a ``Detector`` subclass available as ``detector=<name>``."""

    def wrap(cls: type) -> type:
        DETECTORS[name] = cls
        return cls

    return wrap


def _load_all() -> None:
    # Importing the modules registers their detectors.
    from rsdet.models.detectors import cascade_rcnn, faster_rcnn, mask_rcnn, one_stage, yolact  # noqa: F401


def build_detector(cfg: Any, num_classes: int) -> nn.Module:
    """Build the detector named by ``cfg.detector.name`` for ``num_classes`` foreground classes."""
    _load_all()
    name = cfg.detector.name
    if name not in DETECTORS:
        raise ConfigError(f"detector={name!r} is not available; choose one of {', '.join(sorted(DETECTORS))}")
    from rsdet.models.torchvision_init import prepare_for_init  # detector.init: structure only, no file read

    return prepare_for_init(DETECTORS[name](cfg, num_classes), cfg)


def detector_class(name: str) -> type:
    """The class registered as ``detector=<name>`` (a ConfigError listing the others if none is)."""
    _load_all()
    if name not in DETECTORS:
        raise ConfigError(f"detector={name!r} is not available; choose one of {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name]


def detector_predicts_masks(name: str) -> bool:
    """Whether ``detector=<name>`` returns instance masks with its detections (``Detector.predicts_masks``)."""
    return bool(getattr(detector_class(name), "predicts_masks", False))


def available_detectors() -> list[str]:
    _load_all()
    return sorted(DETECTORS)
