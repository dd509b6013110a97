"""Detectors: heads produce predictions and assignments, one criterion turns them into losses.

``build_detector(cfg, num_classes)`` picks the class registered under ``cfg.detector.name``
(docs/detectors.md)."""

from rsdet.models.build import DETECTORS, available_detectors, build_detector

__all__ = ["DETECTORS", "available_detectors", "build_detector"]
