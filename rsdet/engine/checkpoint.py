"""Checkpoints from which ``resume=true`` continues exactly where the run was (docs/resume.md).

A checkpoint holds the model (with the criterion's loss state, e.g. aLRP self-balance), optimiser,
iteration, every RNG state, the data loader's position (epoch, batches consumed, what fixes the order)
and the logging state (the partial sums of the next history row, counters, training time).

Safety: every field is a tensor or a plain value (dict, list, str, int, float, bool, None) — the RNG
states are stored as tensors — so a checkpoint loads with ``torch.load(weights_only=True)``, which
refuses anything that could run code when unpickled. A file asking for more is refused with a
message; the format 1-2 of earlier rsdet 0.1 (numpy's RNG state as an array) loads only on request
(``legacy_checkpoint=true`` / ``--legacy-checkpoint``), and then still without running code: the
loader allows numpy's array type and nothing else. ``load_checkpoint`` also checks the contents
(keys, types, finite weights) before anyone acts on them.

Durability: a checkpoint is written to a temporary file of a unique name in the same folder, flushed
and fsynced, then renamed over ``last.pt`` and the folder fsynced, so the previous checkpoint stays
until the new one is on disk, and a crash or a full disk never leaves a half checkpoint behind. A
checkpoint with a non-finite weight or optimiser value is never written.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdet.errors import RsdetError
from rsdet.records import share_like_open

LAST = "last.pt"
#: 1: model/optimizer/iteration/criterion/rng/scaler/extra; 2: the loss state inside "model", adds "data"
#: (the loader's position) and "log" (the next history row's partial state); 3: RNG states as tensors,
#: every field loadable with torch.load(weights_only=True)
FORMAT_VERSION = 3
#: how the user asks for a format 1-2 checkpoint: on the rsdet train command line, and rsdet evaluate's flag
LEGACY_OVERRIDE = "legacy_checkpoint=true"
LEGACY_FLAG = "--legacy-checkpoint"
#: what a format 1-2 checkpoint needs beyond tensors and plain values (numpy's RNG state array)
_LEGACY_GLOBALS = {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
                   "numpy.dtype", "numpy.dtypes.UInt32DType"}


class CheckpointError(RsdetError):
    """A checkpoint cannot be written, or is refused or unreadable when loaded."""


# ------------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict:
    """Every RNG state of this process as tensors and plain values (format 3)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next},
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore ``rng_state()`` (format 3, or the tuple/array states of formats 1-2)."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    if isinstance(py, Mapping):
        py = (int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss_next"])
    random.setstate(py)
    npy = state["numpy"]
    if isinstance(npy, Mapping):
        npy = (npy["kind"], np.asarray(npy["keys"].numpy(), dtype=np.uint32), int(npy["pos"]),
               int(npy["has_gauss"]), float(npy["cached_gaussian"]))
    np.random.set_state(npy)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ finite values
def _float_tensors(obj: Any, prefix: str = ""):
    """(name, tensor) of every floating-point tensor in a nested dict/list."""
    if torch.is_tensor(obj):
        if obj.is_floating_point() or obj.is_complex():
            yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _float_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _float_tensors(v, f"{prefix}[{i}]")


def nonfinite_tensors(*states: Any) -> tuple[list[str], int]:
    """Names of the floating-point tensors of ``states`` holding a NaN or inf, and how many there are.

    One read-back for all of them (a stacked flag), so checking a model costs one synchronisation."""
    named = [(n, t) for s in states for n, t in _float_tensors(s)]
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(named):
        by_device.setdefault(t.device, []).append(i)
    ok = [True] * len(named)
    for indices in by_device.values():
        flags = torch.stack([torch.isfinite(named[i][1]).all() for i in indices]).tolist()
        for i, flag in zip(indices, flags):
            ok[i] = bool(flag)
    return [named[i][0] for i in range(len(named)) if not ok[i]], len(named)


# ------------------------------------------------------------------------------------------ writing
def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: Path) -> int:
    """Delete temporary checkpoint files a killed writer left behind (call only while holding the run's
    lock: nobody else writes then); returns how many were removed."""
    removed = 0
    for tmp in Path(directory).glob(f".{LAST}.*.tmp") if Path(directory).is_dir() else []:
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc`` (itself, or what it was raised while handling), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def save_checkpoint(directory: Path, *, model, optimizer, iteration: int, scaler=None,
                    extra: dict | None = None, data: dict | None = None, log: dict | None = None,
                    rng_ranks: list[dict] | None = None) -> Path:
    """Write ``directory/last.pt`` durably. ``data`` is the loader's position (``TrainLoader.state_dict()``),
    ``log`` the logging state the trainer needs to continue its history rows unchanged,
    ``rng_ranks`` every rank's RNG states in a data-parallel run (``rng`` stays rank 0's).

    Raises ``CheckpointError`` (the previous checkpoint left as it was) when a weight or optimiser
    value is not finite, or when the file cannot be written (disk full, file-size limit, ...)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "iteration": int(iteration),
        "rng": rng_state(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "extra": extra or {},
        "data": data,
        "log": log,
    }
    if rng_ranks is not None:
        payload["rng_ranks"] = rng_ranks
    path = Path(directory) / LAST
    bad, total = nonfinite_tensors(payload["model"], (payload["optimizer"] or {}).get("state"))
    if bad:
        raise CheckpointError(f"not writing the checkpoint of iteration {iteration} to {path}: {len(bad)} of {total} "
                              f"tensors hold NaN/inf (first: {', '.join(bad[:3])}); the previous checkpoint is kept")
    tmp = None
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{LAST}.", suffix=".tmp", dir=directory)
        share_like_open(fd)
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(Path(directory))
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as a RuntimeError
        cause = _os_error(exc)
        if cause is None:
            raise
        raise CheckpointError(f"could not write the checkpoint of iteration {iteration} to {path} "
                              f"({cause.strerror or cause}); the previous checkpoint, if any, is intact. Free disk "
                              "space (or raise the file-size limit) and continue with resume=true") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


# ------------------------------------------------------------------------------------------ reading
def _unsafe_globals(path: Path, exc: Exception) -> list[str]:
    """What a refused file asked the unpickler for (module.name of each global), as far as can be told
    without unpickling it."""
    if zipfile.is_zipfile(path):
        with contextlib.suppress(Exception):
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    return re.findall(r"GLOBAL ([\w.]+)", str(exc))


def _refusal(path: Path, exc: Exception) -> tuple[bool, str]:
    """(is it the numpy array of a format 1-2 checkpoint?, why the file was refused, in a few words)."""
    names = _unsafe_globals(path, exc)
    if names and set(names) <= _LEGACY_GLOBALS:
        return True, f"numpy arrays ({', '.join(sorted(set(names)))})"
    if names:
        return False, f"objects other than tensors and plain values ({', '.join(names[:5])})"
    detail = re.search(r"(Unsupported [^\n.]*)", str(exc))
    return False, detail.group(1).strip() if detail else "contents the safe loader does not accept"


def _load_legacy(path: Path) -> Any:
    """A format 1-2 checkpoint through the safe loader with numpy's array reconstruction allowed."""
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        with contextlib.suppress(ImportError, AttributeError):
            allowed.append(__import__(module, fromlist=["_reconstruct"])._reconstruct)
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: Path, *, allow_legacy: bool = False) -> dict[str, Any]:
    """Read and check a checkpoint without running any code from it.

    ``allow_legacy``: accept format 1-2 (its numpy RNG array is allowed in the loader,
    nothing else). Raises ``CheckpointError`` naming the file, what was wrong and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without resume=... or point it at a run directory "
                              "that has checkpoints/last.pt")
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols of files it refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        legacy, why = _refusal(path, exc)
        if not legacy:
            raise CheckpointError(f"refusing to load {path}: it holds {why}, which could run code when loaded. "
                                  "rsdet loads only tensors and plain values; use a checkpoint written by "
                                  "rsdet train") from None
        if not allow_legacy:
            raise CheckpointError(
                f"{path} is a checkpoint of an older rsdet (format 1-2: numpy's RNG state as an array, which the "
                f"safe loader refuses). To load it anyway, add {LEGACY_OVERRIDE} to rsdet train (or {LEGACY_FLAG} "
                "to rsdet evaluate): numpy arrays are then allowed in the loader, nothing else; the next checkpoint "
                "is written in the current format") from None
        try:
            state = _load_legacy(path)
        except Exception as err:  # noqa: BLE001 - anything else in an old file is refused as well
            raise CheckpointError(f"refusing to load {path} even with {LEGACY_OVERRIDE}: "
                                  f"{_refusal(path, err)[1]}") from None
    except Exception as exc:  # a truncated/corrupt file
        raise CheckpointError(f"checkpoint {path} cannot be read ({' '.join(str(exc).split())[:300]}); delete it "
                              "to restart that run") from exc
    check_checkpoint(state, path)
    return state


def check_checkpoint(state: Any, path: Path | str) -> None:
    """The fields a resume or an evaluation relies on, with the types they must have, and finite weights."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is not a usable rsdet checkpoint: {what}; delete it to restart "
                               "that run, or point resume=... / rsdet evaluate at another one")

    if not isinstance(state, Mapping):
        raise bad(f"expected a dict, found {type(state).__name__}")
    version = state.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {version}, written by a newer rsdet than this one "
                              f"(format {FORMAT_VERSION}); upgrade rsdet to use it")
    model = state.get("model")
    if not isinstance(model, Mapping) or not model or not all(isinstance(k, str) for k in model):
        raise bad("no 'model' state dict")
    iteration = state.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise bad(f"'iteration' is {iteration!r}, not a non-negative integer")
    for key in ("optimizer", "scaler", "data", "log", "extra"):
        if state.get(key) is not None and not isinstance(state[key], Mapping):
            raise bad(f"'{key}' is a {type(state[key]).__name__}, not a dict")
    rng = state.get("rng")
    if rng is not None and not (isinstance(rng, Mapping) and {"torch", "python", "numpy"} <= set(rng)):
        raise bad("'rng' lacks the torch/python/numpy states")
    ranks = state.get("rng_ranks")
    if ranks is not None and not (isinstance(ranks, list) and all(isinstance(r, Mapping) for r in ranks)):
        raise bad("'rng_ranks' is not a list of RNG states")
    names, _ = nonfinite_tensors(model)
    if names:
        raise bad(f"{len(names)} weights hold NaN/inf (first: {', '.join(names[:3])})")
