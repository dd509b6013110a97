"""Detectors: heads produce predictions and assignments, one criterion turns them into losses."""

from rsdet.models.faster_rcnn import FasterRCNN, build_detector

__all__ = ["FasterRCNN", "build_detector"]
