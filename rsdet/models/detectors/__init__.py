"""Detectors: a backbone plus heads, registered by name in ``rsdet.models.build`` (docs/detectors.md)."""
