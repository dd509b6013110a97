"""Names that become paths: sanitised, and unique where two runs could otherwise share a folder.

conf/train.yaml names run directories ``outputs/runs/<date>/<time>_<loss>_<suffix>`` and sweep
directories ``outputs/multirun/<date>/<time>_<suffix>`` with two resolvers registered here:

- ``${rsdet.name:TEXT}``: TEXT reduced to a single safe path component (``safe_name``): a
  config-group choice such as ``loss=../../x`` can never leave ``outputs/``;
- ``${rsdet.unique:}``: six random hex digits, drawn once per command (cached, so the run directory,
  Hydra's copy of it and every job of a sweep agree), so that two runs started in the same second
  never share a directory.
"""

from __future__ import annotations

import re
import secrets

from omegaconf import OmegaConf

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]+")
MAX_NAME = 80


def safe_name(text: object, max_len: int = MAX_NAME) -> str:
    """``text`` as one harmless path component: characters outside ``A-Z a-z 0-9 . _ + = , -``
    (path separators, control characters, spaces, ...) become ``-``, leading dots and dashes go
    (no ``..``, no hidden or option-like names), at most ``max_len`` characters; never empty."""
    name = _UNSAFE.sub("-", str(text)).lstrip(".-")[:max_len].rstrip(".")
    return name or "run"


def unique_suffix() -> str:
    return secrets.token_hex(3)


def register_resolvers() -> None:
    """Register ``rsdet.name`` and ``rsdet.unique`` (idempotent); before Hydra composes conf/train.yaml."""
    OmegaConf.register_new_resolver("rsdet.name", safe_name, replace=True)
    OmegaConf.register_new_resolver("rsdet.unique", unique_suffix, use_cache=True, replace=True)
