"""Checkpoints from which ``resume=true`` continues exactly where the run was.

A checkpoint holds the model (with the criterion's loss state, e.g. aLRP self-balance), optimiser,
iteration, every RNG state, the data loader's position (epoch, batches consumed, what fixes the order)
and the logging state (the partial sums of the next history row, counters, training time). It is
written to a temporary file and renamed, so an interrupt during the write never destroys the previous
good checkpoint. The format is described in docs/resume.md.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsdet.errors import RsdetError

LAST = "last.pt"
#: 1: model/optimizer/iteration/criterion/rng/scaler/extra; 2: the loss state inside "model", adds "data"
#: (the loader's position) and "log" (the next history row's partial state)
FORMAT_VERSION = 2


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, *, model, optimizer, iteration: int, scaler=None,
                    extra: dict | None = None, data: dict | None = None, log: dict | None = None,
                    rng_ranks: list[dict] | None = None) -> Path:
    """Write ``directory/last.pt``. ``data`` is the loader's position (``TrainLoader.state_dict()``),
    ``log`` the logging state the trainer needs to continue its history rows unchanged,
    ``rng_ranks`` every rank's RNG states in a data-parallel run (``rng`` stays rank 0's)."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "iteration": iteration,
        "rng": rng_state(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "extra": extra or {},
        "data": data,
        "log": log,
    }
    if rng_ranks is not None:
        payload["rng_ranks"] = rng_ranks
    path = directory / LAST
    tmp = directory / (LAST + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RsdetError(f"no checkpoint at {path}; start without resume=... or point it at a run directory "
                         "that has checkpoints/last.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated/corrupt file
        raise RsdetError(f"checkpoint {path} cannot be read ({exc}); delete it to restart that run") from exc
