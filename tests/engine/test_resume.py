"""The resume policy without Hydra: which run is continued, what may differ, and that a run folder is
claimed (checkpoint read and checked, lock taken) before anything in it is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rsdet.engine import resume
from rsdet.engine.checkpoint import CheckpointError, save_checkpoint
from rsdet.engine.locks import LockHeld
from rsdet.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def _run(root: Path, name: str, status: str, overrides: list[str], checkpoint: bool = True) -> Path:
    run = root / "outputs" / "runs" / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": status, "overrides": overrides}))
    (run / "config.yaml").write_text("seed: 3\ndevice: cuda\nresume: false\n")
    if checkpoint:
        model = torch.nn.Linear(2, 2)
        save_checkpoint(run / "checkpoints", model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                        iteration=2)
    return run


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_the_newest_unfinished_run_with_the_same_overrides_is_continued(tmp_path):
    _run(tmp_path, "a", "interrupted", ["loss=rs", "seed=1"])
    newest = _run(tmp_path, "b", "running", ["seed=1", "loss=rs", "device=cpu"])  # order, device: neutral
    _run(tmp_path, "c", "completed", ["loss=rs", "seed=1"])
    _run(tmp_path, "d", "failed", ["loss=rs", "seed=2"])
    _run(tmp_path, "e", "failed", ["loss=rs", "seed=1"], checkpoint=False)
    os.utime(newest / "checkpoints" / "last.pt", (2e9, 2e9))
    outputs = tmp_path / "outputs"
    assert resume.find_resumable("true", ["loss=rs", "seed=1", "resume=true"], outputs) == newest
    assert resume.find_resumable("true", ["loss=ce"], outputs) is None
    assert resume.find_resumable(str(newest), [], outputs) == newest
    with pytest.raises(Exception, match="does not exist"):
        resume.find_resumable(str(tmp_path), [], outputs)


def test_a_folder_is_claimed_only_after_its_checkpoint_was_read_and_checked(tmp_path):
    run = _run(tmp_path, "a", "interrupted", ["loss=rs"])
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    before = _snapshot(run)
    with pytest.raises(CheckpointError):
        resume.claim(run, resume.checkpoint_of(run))
    assert _snapshot(run) == before and not (run / ".lock").exists()  # nothing written, not even the lock

    good = _run(tmp_path, "b", "interrupted", ["loss=rs"])
    lock, state = resume.claim(good, resume.checkpoint_of(good))
    try:
        assert state["iteration"] == 2 and lock.held and (good / ".lock").is_file()
    finally:
        lock.release()


def test_a_live_run_is_not_taken_and_its_process_is_named(tmp_path):
    run = _run(tmp_path, "a", "running", ["loss=rs"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rsdet.engine.locks import DirLock\n"
                               "lock = DirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(run)],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(run)
        with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
            resume.claim(run, resume.checkpoint_of(run))
        assert _snapshot(run) == before
    finally:
        holder.kill()
        holder.wait(10)


def test_a_resumed_run_keeps_its_config_and_refuses_interpolations(tmp_path):
    run = _run(tmp_path, "a", "interrupted", ["loss=rs"], checkpoint=False)
    now = OmegaConf.create({"seed": 0, "device": "cpu", "resume": True, "legacy_checkpoint": True})
    cfg = resume.resumed_config(run, now, ["resume=true", "legacy_checkpoint=true"])
    assert (cfg.seed, cfg.device, cfg.resume, cfg.legacy_checkpoint) == (3, "cpu", True, True)
    (run / "config.yaml").write_text("seed: 3\nsecret: ${oc.env:HOME}\n")
    with pytest.raises(DataError, match="interpolations.*secret"):
        resume.resumed_config(run, now, ["resume=true"])
