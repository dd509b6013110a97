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

import atexit
import importlib
import os
import shutil
import stat
import tempfile
import warnings

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
    import is retried with the cache in a private folder of this user
    (:func:`fallback_cache_dir`)."""
    try:
        return importlib.import_module(_KERNELS)
    except RuntimeError as exc:
        if "cannot cache" not in str(exc):
            raise
    import numba

    numba.config.CACHE_DIR = fallback_cache_dir()
    return importlib.import_module(_KERNELS)


def _private_dir(path: str) -> bool:
    """Create ``path`` as a folder only this user can enter (0700), or accept it if it already
    is one: a real folder (not a link), owned by this user, no group/other permissions."""
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)            # whatever the umask
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and stat.S_IMODE(st.st_mode) & 0o077 == 0 and os.access(path, os.W_OK | os.X_OK))


def fallback_cache_dir() -> str:
    """numba's cache folder when neither the package nor the user's cache folder is writable.

    A folder private to this user (created 0700, owner and permissions checked, never a link):
    ``$XDG_RUNTIME_DIR/rsdet-numba-cache`` when the runtime folder is this user's, else
    ``<temp>/rsdet-numba-cache-<uid>``.  If that name is taken by anything else (another user
    could create it first in a shared temp folder), the cache goes to a fresh folder with a
    random name (``tempfile.mkdtemp``, 0700) for this process only, with a warning.
    """
    if not hasattr(os, "getuid"):        # Windows: the temp folder is the user's own
        return os.path.join(tempfile.gettempdir(), "rsdet-numba-cache")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.lstat(runtime)
            ours = (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
                    and stat.S_IMODE(st.st_mode) & 0o077 == 0)
        except OSError:
            ours = False
        if ours and _private_dir(os.path.join(runtime, "rsdet-numba-cache")):
            return os.path.join(runtime, "rsdet-numba-cache")
    shared = os.path.join(tempfile.gettempdir(), f"rsdet-numba-cache-{os.getuid()}")
    if _private_dir(shared):
        return shared
    path = tempfile.mkdtemp(prefix="rsdet-numba-cache-")
    atexit.register(shutil.rmtree, path, True)
    warnings.warn(f"rsdet: {shared} exists but is not a private folder of this user (uid "
                  f"{os.getuid()}): numba's compiled-kernel cache goes to {path} for this "
                  f"process only; remove {shared} or set NUMBA_CACHE_DIR to a folder of yours",
                  RuntimeWarning, stacklevel=2)
    return path


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
