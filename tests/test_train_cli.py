"""`rsdet train` without training: finding the sweep that `-m ... resume=true` continues."""

from pathlib import Path

import pytest
import yaml

from rsdet import train_cli
from rsdet.errors import RsdetError


def _sweep(root: Path, name: str, task: list[str]) -> Path:
    folder = root / "outputs" / "multirun" / name
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}, "seed": 0}))
    return folder


def test_the_newest_sweep_with_the_same_overrides_is_found(tmp_path):
    _sweep(tmp_path, "2026-01-01/10-00-00", ["loss=rs,ce", "schedule.max_iters=4"])
    new = _sweep(tmp_path, "2026-01-02/09-00-00", ["schedule.max_iters=4", "loss=rs,ce", "device=cpu"])
    _sweep(tmp_path, "2026-01-03/09-00-00", ["loss=rs,ce", "schedule.max_iters=8"])  # another sweep
    outputs = tmp_path / "outputs"
    # order and resume-neutral keys (device, resume, logger, num_workers) do not matter
    assert train_cli.find_sweep(["loss=rs,ce", "schedule.max_iters=4", "resume=true"], outputs) == new
    assert train_cli.find_sweep(["loss=rs,ce,focal", "schedule.max_iters=4"], outputs) is None
    assert train_cli.find_sweep(["loss=rs,ce"], tmp_path / "nowhere") is None


def test_resume_in_multirun_points_hydra_at_the_sweep(tmp_path, monkeypatch, capsys):
    sweep = _sweep(tmp_path, "2026-01-01/10-00-00", ["loss=rs,ce"])
    (sweep.parent.parent / "2026-01-01" / "broken").mkdir()
    (sweep.parent.parent / "2026-01-01" / "broken" / "multirun.yaml").write_text("hydra: [unclosed")
    monkeypatch.chdir(tmp_path)
    argv = ["-m", "loss=rs,ce", "resume=true"]
    assert train_cli._resume_sweep_argv(argv) == [*argv, f"hydra.sweep.dir='{sweep.resolve()}'"]
    assert "resuming the sweep in" in capsys.readouterr().out
    named = ["-m", "loss=rs,ce", f"resume={sweep}"]
    assert train_cli._resume_sweep_argv(named)[-1] == f"hydra.sweep.dir='{sweep.resolve()}'"
    for unchanged in (["loss=rs", "resume=true"],  # a single run resumes its run, not a sweep
                      ["-m", "loss=rs,ce"], ["-m", "loss=rs,ce", "resume=false"],
                      ["-m", "loss=rs,ce", "resume=true", "hydra.sweep.dir=mine"],
                      ["-m", "loss=ap,ce", "resume=true"]):  # no such sweep: a new one
        assert train_cli._resume_sweep_argv(unchanged) == unchanged
    with pytest.raises(RsdetError, match="not a sweep directory"):
        train_cli._resume_sweep_argv(["-m", "loss=rs,ce", f"resume={tmp_path}"])


def test_a_resumed_run_keeps_its_config_but_takes_device_workers_and_logger_from_the_command(tmp_path):
    from omegaconf import OmegaConf

    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save({"seed": 3, "device": "cuda", "resume": False, "num_workers": 0,
                    "logger": {"name": "wandb", "mode": "offline", "log_every": 5}}, run / "config.yaml")
    now = OmegaConf.create({"seed": 0, "device": "cpu", "resume": True, "num_workers": 2,
                            "logger": {"name": "none", "log_every": 10}})
    plain = train_cli._resumed_config(run, now, ["resume=true"])
    assert (plain.seed, plain.device, plain.resume) == (3, "cpu", True)
    assert (plain.num_workers, plain.logger.name) == (0, "wandb")
    given = train_cli._resumed_config(run, now, ["resume=true", "num_workers=2", "logger=none"])
    assert (given.seed, given.num_workers, given.logger.name, given.logger.log_every) == (3, 2, "none", 5)
