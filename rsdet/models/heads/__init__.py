"""Heads predict (and assign); the criterion turns their stage outputs into losses (docs/detectors.md)."""
