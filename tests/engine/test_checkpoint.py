"""Checkpoints: format 3 loads with weights_only=True, crafted and legacy files are refused with a
message, non-finite weights are never written, and a failed write leaves the previous checkpoint."""

import os
import pickle
import random
import resource
import signal

import numpy as np
import pytest
import torch

from rsdet.engine import checkpoint as ckpt
from rsdet.engine.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def _model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()  # momentum buffers in the optimiser state
    return model, optimizer


def _save(folder, iteration=3, **kw):
    model, optimizer = _model()
    return save_checkpoint(folder, model=model, optimizer=optimizer, iteration=iteration,
                           extra={"num_classes": 3}, data={"epoch": 0, "batch": 3}, log={"sums": {"a": 1.0}}, **kw)


class _CreatesAFile:
    """Unpickling this runs ``open(path, "w")``: what a crafted checkpoint in a shared folder could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_every_field_loads_with_weights_only_and_the_rng_states_come_back(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    path = _save(tmp_path, rng_ranks=[rng_state(), rng_state()])
    expected = (random.random(), np.random.random(), torch.rand(()).item())
    raw = torch.load(path, weights_only=True)  # the plain safe loader, no allowlist
    assert raw["format_version"] == ckpt.FORMAT_VERSION and raw["iteration"] == 3
    assert torch.is_tensor(raw["rng"]["numpy"]["keys"]) and torch.is_tensor(raw["rng"]["python"]["state"])
    state = load_checkpoint(path)
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(state["rng"])
    assert (random.random(), np.random.random(), torch.rand(()).item()) == expected
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()  # readable like any file written with open()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("kind", ["raw pickle", "torch.save"])
def test_a_crafted_checkpoint_runs_nothing_and_is_refused(tmp_path, kind):
    target = tmp_path / "created-by-unpickling"
    path = tmp_path / "last.pt"
    if kind == "raw pickle":
        path.write_bytes(pickle.dumps({"model": _CreatesAFile(target)}))
    else:
        torch.save({"format_version": 3, "model": _CreatesAFile(target)}, path)
    for legacy in (False, True):  # the legacy opt-in allows numpy arrays, nothing else
        with pytest.raises(CheckpointError, match="refusing to load") as info:
            load_checkpoint(path, allow_legacy=legacy)
        assert str(path) in str(info.value)
    assert not target.exists()


def _legacy(path, extra=None):
    """A checkpoint of format 2: numpy's and Python's RNG states as they come."""
    model, optimizer = _model()
    torch.save({"format_version": 2, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": 2,
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
                "extra": {}, "data": None, "log": None, **(extra or {})}, path)


def test_a_legacy_checkpoint_needs_the_flag_named_in_the_error(tmp_path):
    path = tmp_path / "last.pt"
    _legacy(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert ckpt.LEGACY_OVERRIDE in str(info.value) and ckpt.LEGACY_FLAG in str(info.value)
    state = load_checkpoint(path, allow_legacy=True)
    assert state["iteration"] == 2
    set_rng_state(state["rng"])  # the tuple/array states of format 2 restore too
    target = tmp_path / "created"
    _legacy(path, {"trap": _CreatesAFile(target)})  # numpy arrays and something else: refused even so
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(path, allow_legacy=True)
    assert not target.exists()


@pytest.mark.parametrize("content, message", [
    (["not", "a", "dict"], "expected a dict"),
    ({"model": {}, "iteration": 1}, "no 'model'"),
    ({"model": {"w": torch.ones(1)}, "iteration": -1}, "non-negative"),
    ({"model": {"w": torch.ones(1)}, "iteration": 1, "optimizer": [1]}, "'optimizer'"),
    ({"model": {"w": torch.tensor([1.0, float("nan")])}, "iteration": 1}, "NaN/inf"),
    ({"model": {"w": torch.ones(1)}, "iteration": 1, "format_version": 99}, "newer rsdet"),
])
def test_contents_are_checked_before_anyone_uses_them(tmp_path, content, message):
    path = tmp_path / "last.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_and_missing_files_are_clear_errors(tmp_path):
    path = _save(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_non_finite_weights_are_never_written_and_the_previous_checkpoint_stays(tmp_path):
    path = _save(tmp_path, iteration=2)
    before = path.read_bytes()
    model, optimizer = _model()
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="NaN/inf") as info:
        save_checkpoint(tmp_path, model=model, optimizer=optimizer, iteration=4)
    assert "0.weight" in str(info.value)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path):
    """A file-size limit (what a full disk looks like to the writer): a clear error, last.pt intact."""
    path = _save(tmp_path, iteration=2)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # rsdet train does this too: EFBIG, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(CheckpointError, match="could not write the checkpoint of iteration 4") as info:
            _save(tmp_path, iteration=4)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert "File too large" in str(info.value) and "resume=true" in str(info.value)
    assert load_checkpoint(path)["iteration"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_the_file_and_its_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", None)), real_replace(a, b))[1])
    _save(tmp_path)
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    _save(tmp_path)
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert ckpt.remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
