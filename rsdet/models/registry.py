"""The detector registry: ``detector.name`` -> class, filled by ``@register`` as each detector module
is imported.

This module imports nothing from the detectors, so a detector module can import it without an
import circle; ``rsdet.models.detectors`` imports every detector module once (one line per
detector), and ``rsdet.models.build`` imports that package (docs/detectors.md, "Adding a detector").
"""

from __future__ import annotations

from typing import Callable

from rsdet.errors import RsdetError

DETECTORS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a ``Detector`` subclass available as ``detector=<name>``. Two different
    classes under one name are a programming error (re-importing the same module is not)."""

    def wrap(cls: type) -> type:
        old = DETECTORS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise RsdetError(f"detector={name!r} is registered twice: {old.__module__}.{old.__qualname__} and "
                             f"{cls.__module__}.{cls.__qualname__}; give one of them another name")
        DETECTORS[name] = cls
        return cls

    return wrap
