"""Which implementation the ranking losses' hot loops use on the CPU: torch or compiled (numba).

``RSDET_LOSS_KERNEL`` (read at every call, so tests and benchmarks can switch it):

* ``auto`` (default): the numba kernels for CPU tensors when numba can be imported, else torch;
* ``numba``: the numba kernels for CPU tensors; an error if numba cannot be imported;
* ``torch``: the vectorised torch code everywhere.

Tensors on any other device always use the torch code.  numba is imported on the first CPU call
that wants it (not with ``rsdet``): the import takes ~0.3 s, and compiling the kernels on the
first use in a process is read from numba's on-disk cache after the first run (docs/losses.md,
"Compiled CPU kernels").
"""

from __future__ import annotations

import importlib
import os
import tempfile

import torch

from rsdet.errors import ConfigError

ENV = "RSDET_LOSS_KERNEL"
_KERNELS = "rsdet.losses._numba_kernels"
CHOICES = ("auto", "numba", "torch")

_module = None          # the imported rsdet.losses._numba_kernels
_import_error: str | None = None


def _import_kernels():
    """Import the kernels.  numba caches compiled code next to the module (``__pycache__``) or,
    if that is read-only, in the user's cache folder (``~/.cache/numba``); when neither is
    writable (and ``NUMBA_CACHE_DIR`` is unset) it refuses to define cached functions, so the
    import is retried with the cache in a per-user folder under the system temp directory."""
    try:
        return importlib.import_module(_KERNELS)
    except RuntimeError as exc:
        if "cannot cache" not in str(exc):
            raise
    import numba

    numba.config.CACHE_DIR = fallback_cache_dir()
    return importlib.import_module(_KERNELS)


def fallback_cache_dir() -> str:
    """numba's cache folder when neither the package nor the user's cache folder is writable."""
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return os.path.join(tempfile.gettempdir(), f"rsdet-numba-cache-{user}")


def _load():
    global _module, _import_error
    if _module is None and _import_error is None:
        try:
            _module = _import_kernels()
        except Exception as exc:   # ImportError, or numba failing to initialise
            _import_error = f"{type(exc).__name__}: {exc}"
    return _module


def kernel_mode() -> str:
    """The validated value of ``RSDET_LOSS_KERNEL`` (``auto`` when unset or empty)."""
    mode = os.environ.get(ENV, "").strip().lower() or "auto"
    if mode not in CHOICES:
        raise ConfigError(f"{ENV}={os.environ[ENV]!r} is not one of {', '.join(CHOICES)}; "
                          f"unset it (auto: numba on the CPU when installed) or pick one of those")
    return mode


def numba_kernels(*tensors: torch.Tensor):
    """The numba kernel module if the hot loops for these tensors should run compiled, else None."""
    mode = kernel_mode()
    if mode == "torch" or any(t.device.type != "cpu" for t in tensors):
        return None
    module = _load()
    if module is None and mode == "numba":
        raise ConfigError(f"{ENV}=numba but numba cannot be imported ({_import_error}); "
                          f"install it (pip install 'numba>=0.60') or set {ENV}=auto or torch")
    return module


def numba_available() -> bool:
    """Whether the numba kernels can be imported (imports them)."""
    return _load() is not None
