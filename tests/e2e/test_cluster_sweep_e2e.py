"""Cluster sweeps through hydra-submitit-launcher (README, "Multi-GPU and clusters").

``hydra/launcher=local`` runs a 2-job sweep with submitit's local executor (each job a separate
process, as on SLURM) and ``rsdet report`` reads both records; ``hydra/launcher=slurm`` composes
into one SLURM job per run with one task per GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import TINY
from rsdet.paths import conf_dir
from rsdet.records import find_runs

REPO = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.mark.slow
def test_a_two_job_sweep_through_the_local_submitit_launcher_is_reported(tiny_run, tmp_path):
    overrides = [o for o in tiny_run if not o.startswith("schedule.max_iters")]
    overrides += ["schedule.max_iters=1", "eval.max_images=2"]
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "rsdet", "train", "-m", "hydra/launcher=local", "seed=0,1",
                           *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = find_runs(tmp_path / "outputs" / "multirun")
    assert [r.status for r in runs] == ["completed", "completed"]
    assert sorted(r.config["seed"] for r in runs) == [0, 1]
    assert all((r.dir.parent / ".submitit").is_dir() for r in runs)  # the jobs went through submitit
    report = subprocess.run([sys.executable, "-m", "rsdet", "report", str(tmp_path / "outputs" / "multirun"),
                             "--metric", "AP"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "2 runs" in report.stdout


def test_the_slurm_preset_runs_one_task_per_gpu():
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                          "hydra.launcher.gpus_per_node=8", "hydra.launcher.nodes=2"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.tasks_per_node, launcher.nodes) == ("gpu", 8, 2)
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s >= 60  # requeue on time limit/preemption
