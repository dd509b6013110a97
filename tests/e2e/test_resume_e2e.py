"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed with ``resume=true`` ends with the
same history, metrics and model parameters as the same run left alone — with ``num_workers`` 0 and 2.

The tiny run is aLRP with random samplers (the detector draws from the global torch RNG) and a
self-balance period of 3 iterations (loss state in the model's state dict), 12 training images in batches of 2 (6 batches an
epoch, flips on), 8 iterations, a checkpoint every 3 and a history row every 2. The killed run is
killed after iteration 5: its last checkpoint is iteration 3, in the middle of the first epoch, with
iteration 3 already summed into the next history row, and its history already holds row 4, which the
resumed run writes again.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY
from rsdet import train_cli
from rsdet.records import RunRecord, find_runs

REPO = Path(__file__).resolve().parents[2]
EXACT = [o for o in TINY if not o.startswith(("schedule.max_iters", "schedule.checkpoint_every", "logger.log_every"))]
EXACT += ["loss=alrp", "sampler=random", "loss.alrp_period=3", "schedule.max_iters=8", "schedule.checkpoint_every=3",
          "logger.log_every=2", "eval.max_images=3"]
KILL_AFTER = 5  # iterations completed when the kill comes
TIMING_KEYS = {"train_seconds", "eval_seconds", "inference_seconds"}

# Runs `rsdet train`, holding still before iteration KILL_AFTER + 1 so that the kill lands at a known
# point; the parent sends SIGKILL from outside once the checkpoint and the marker file exist.
CHILD = """
import sys, time
from pathlib import Path
import rsdet.engine.trainer as trainer
real_set_lr = trainer.set_lr
def set_lr(optimizer, plan, it):
    if it == {kill_after}:
        Path("reached").write_text(str(it))
        time.sleep(600)
    return real_set_lr(optimizer, plan, it)
trainer.set_lr = set_lr
from rsdet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _single_run(root: Path):
    runs = find_runs(root / "outputs")
    assert len(runs) == 1, [r.dir for r in runs]
    return runs[0]


def _outcome(run) -> dict:
    state = torch.load(run.checkpoint_dir / "last.pt", weights_only=False, map_location="cpu")
    history = [{k: v for k, v in row.items() if k != "sec_per_iter"} for row in run.read_history()]
    metrics = {k: v for k, v in run.metrics.items() if k not in TIMING_KEYS}
    return {"model": state["model"], "criterion": state.get("criterion"), "history": history, "metrics": metrics}


@pytest.fixture(scope="module")
def left_alone(shapes_cache, tmp_path_factory):
    """The run without interruption (num_workers=0), trained in this process."""
    folder = tmp_path_factory.mktemp("left-alone")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSDET_CACHE", str(shapes_cache))
        mp.chdir(folder)
        assert train_cli.main(EXACT) == 0
    return _outcome(_single_run(folder))


def _kill_after_checkpoint(folder: Path, overrides: list[str], shapes_cache: Path) -> None:
    env = {**os.environ, "RSDET_CACHE": str(shapes_cache), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    err = folder / "killed-run.stderr"
    with err.open("w") as stderr:  # a file, not a pipe: a full pipe would block the child
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(kill_after=KILL_AFTER), "train", *overrides],
                                 cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    try:
        while not ((folder / "reached").exists() and list(folder.glob("outputs/runs/*/*/checkpoints/last.pt"))):
            if child.poll() is not None:
                pytest.fail(f"the run ended before the kill (exit {child.returncode}): {err.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the run did not reach the kill point in 120 s: {err.read_text()[-2000:]}")
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("num_workers", [0, 2])
def test_killed_and_resumed_run_equals_the_run_left_alone(left_alone, shapes_cache, tmp_path, monkeypatch,
                                                           num_workers):
    overrides = [*EXACT, f"num_workers={num_workers}"]
    _kill_after_checkpoint(tmp_path, overrides, shapes_cache)
    killed = _single_run(tmp_path)
    assert killed.info["status"] == "running"  # SIGKILL: nothing could close the record
    state = torch.load(killed.checkpoint_dir / "last.pt", weights_only=False)
    assert state["iteration"] == 3 and state["data"]["epoch"] == 0 and state["data"]["batch"] == 3
    assert state["log"]["count"] == 1  # iteration 3 is summed into row 4
    assert [r["iteration"] for r in killed.read_history()] == [2, 4]

    monkeypatch.setenv("RSDET_CACHE", str(shapes_cache))
    monkeypatch.chdir(tmp_path)
    assert train_cli.main([*overrides, "resume=true"]) == 0
    resumed = _single_run(tmp_path)
    assert resumed.dir == killed.dir and resumed.info["status"] == "completed"
    dropped = [json.loads(line) for line in (resumed.dir / "history.dropped.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in dropped] == [4]

    outcome = _outcome(resumed)
    assert outcome["history"] == left_alone["history"]
    assert [r["iteration"] for r in outcome["history"]] == [2, 4, 6, 8]
    assert [r["epoch"] for r in outcome["history"]] == [0, 0, 0, 1]
    assert outcome["metrics"] == left_alone["metrics"]
    assert outcome["criterion"] == left_alone["criterion"]
    assert outcome["model"].keys() == left_alone["model"].keys()
    differing = [k for k, v in outcome["model"].items()  # tensors, and extra state such as the loss state
                 if not (torch.equal(v, left_alone["model"][k]) if torch.is_tensor(v) else v == left_alone["model"][k])]
    assert differing == []


def test_an_interrupted_sweep_resumes_in_its_own_directory(tiny_run, monkeypatch, capsys):
    """Job 0 completes, job 1 is interrupted at iteration 3; `-m ... resume=true` reuses job 0 untouched,
    continues job 1 from its checkpoint, in the same sweep directory, which `rsdet report` reads as one
    sweep (rows, W&B group, Markdown/CSV/LaTeX files)."""
    import rsdet.engine.trainer as trainer
    from rsdet.report.cli import main as report_main

    real_set_lr = trainer.set_lr
    jobs_started = []

    def interrupt_the_second_job(optimizer, plan, it):
        if it == 0:
            jobs_started.append(it)
        if len(jobs_started) == 2 and it == 3:
            raise KeyboardInterrupt
        return real_set_lr(optimizer, plan, it)

    monkeypatch.setattr(trainer, "set_lr", interrupt_the_second_job)
    with pytest.raises(KeyboardInterrupt):
        train_cli.main(["-m", "loss=rs,ce", *tiny_run])
    (sweep,) = Path("outputs/multirun").glob("*/*")
    done, interrupted = find_runs(sweep)
    assert [r.info["multirun"]["job_num"] for r in (done, interrupted)] == [0, 1]
    assert done.info["status"] == "completed" and interrupted.info["status"] == "interrupted"
    assert interrupted.info["iteration"] == 3
    done_record = (done.dir / "run.json").read_text(), (done.dir / "metrics.json").read_text()

    monkeypatch.setattr(trainer, "set_lr", real_set_lr)
    capsys.readouterr()
    assert train_cli.main(["-m", "loss=rs,ce", *tiny_run, "resume=true"]) == 0
    out = capsys.readouterr().out
    assert f"resuming the sweep in {sweep.resolve()}" in out
    assert "2/2 jobs completed (1 reused" in out and f"reused: {done.dir.resolve()}" in out
    assert list(Path("outputs/multirun").glob("*/*")) == [sweep]
    assert ((done.dir / "run.json").read_text(), (done.dir / "metrics.json").read_text()) == done_record
    resumed = RunRecord(interrupted.dir, create=False)
    assert resumed.info["status"] == "completed" and resumed.info["iteration"] == 4
    assert len(resumed.info["resumed"]) == 1 and resumed.info["multirun"] == interrupted.info["multirun"]
    assert [r["iteration"] for r in resumed.read_history()] == [1, 2, 3, 4]

    runs = find_runs(sweep)
    assert sorted(r.info["choices"]["loss"] for r in runs) == ["ce", "rs"]
    assert {r.info["multirun"]["sweep_name"] for r in runs} == {f"{sweep.parent.name}/{sweep.name}"}  # W&B group
    assert report_main([str(sweep), "--rows", "loss", "--metric", "AP,oLRP"]) == 0
    table = capsys.readouterr().out
    assert "rs" in table and "ce" in table
    assert all((sweep / f"report.{ext}").is_file() for ext in ("md", "csv", "tex"))
