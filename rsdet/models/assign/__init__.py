"""Assigners: label anchors or RoIs as positives (a class), negatives or ignored (docs/detectors.md)."""
