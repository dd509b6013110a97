"""Runs you can trust (issue 19), as a user meets them: crafted checkpoints, learning rates that are
not finite or diverge, poisoned weights and gradients, a full disk, a signal during the final
evaluation, checkpoints of the older format, and several processes on one run."""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rsdet import train_cli
from rsdet.engine.checkpoint import LEGACY_OVERRIDE, load_checkpoint
from rsdet.records import RunRecord, find_runs

REPO = Path(__file__).resolve().parents[2]


def _runs():
    return find_runs(Path("outputs"))


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


class _CreatesAFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_checkpoint_creates_nothing_in_resume_or_evaluate(tiny_run, capsys):
    from rsdet.evaluation.cli import main as evaluate_main

    target = Path("created-by-the-checkpoint").resolve()
    run = Path("shared/run")
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\nresume: false\n")
    (run / "run.json").write_text('{"status": "interrupted", "overrides": []}\n')
    torch.save({"format_version": 3, "model": _CreatesAFile(target), "iteration": 1}, run / "checkpoints" / "last.pt")
    before = _snapshot(run)
    assert train_cli.main([*tiny_run, f"resume={run}"]) == 1
    assert "refusing to load" in train_cli.OUTCOMES[0]["error"]
    for args in ([str(run)], [str(run / "checkpoints" / "last.pt")]):
        assert evaluate_main(args) == 1
        assert "refusing to load" in capsys.readouterr().err
    assert not target.exists() and _snapshot(run) == before  # nothing ran, nothing in the folder changed


def test_learning_rates_that_are_not_finite_or_diverge_end_with_a_message_and_no_bad_checkpoint(tiny_run):
    fast = [*tiny_run, "eval.enabled=false"]
    for lr in ("nan", "inf"):
        assert train_cli.main([*fast, f"schedule.lr={lr}"]) == 1
        assert f"schedule.lr={lr}" in train_cli.OUTCOMES[0]["error"] and "finite" in train_cli.OUTCOMES[0]["error"]
    assert train_cli.main([*fast, "schedule.lr=1e6", "schedule.checkpoint_every=1"]) == 1
    for run in _runs():
        assert run.status == "failed"
        error = run.info["error"]
        assert "Traceback" not in error
        last = run.checkpoint_dir / "last.pt"
        if "schedule.lr=1e6" in run.info["overrides"]:
            # diverged: the message names the checkpoint that is kept, and that one is finite (load checks it)
            assert "became" in error and "The last good checkpoint (iteration " in error
            kept = int(error.split("The last good checkpoint (iteration ")[1].split(")")[0])
            assert load_checkpoint(last)["iteration"] == kept
        else:
            assert not last.exists()


def test_poisoned_weights_or_gradients_are_never_checkpointed(tiny_run, monkeypatch):
    import rsdet.engine.trainer as trainer
    from rsdet.models.criterion import Criterion

    fast = [*tiny_run, "eval.enabled=false", "schedule.checkpoint_every=1"]
    real_step, real_forward = trainer.Trainer._step, Criterion.forward

    def step_then_poison(self, images, targets):  # the optimiser step of iteration 2 leaves an inf weight
        out = real_step(self, images, targets)
        if self.iteration == 2:
            with torch.no_grad():
                next(self.parts.model.parameters()).view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(trainer.Trainer, "_step", step_then_poison)
    assert train_cli.main([*fast, "seed=1"]) == 1
    monkeypatch.setattr(trainer.Trainer, "_step", real_step)
    calls = {"n": 0}

    def nan_gradient(self, out, num_images):  # a finite loss whose gradient is NaN (0 * d sqrt(0))
        terms, stats = real_forward(self, out, num_images)
        if out.name == "rcnn":
            calls["n"] += 1
            if calls["n"] == 2:
                box = terms["rcnn_box"]
                terms["rcnn_box"] = box + 0 * torch.sqrt(box - box)
        return terms, stats

    monkeypatch.setattr(Criterion, "forward", nan_gradient)
    assert train_cli.main([*fast, "seed=2"]) == 1
    weights, gradients = sorted(_runs(), key=lambda r: r.config["seed"])
    assert "weights became NaN/inf by iteration 2" in weights.info["error"]
    assert "gradients became NaN/inf at iteration 2" in gradients.info["error"]
    for run in (weights, gradients):
        assert "The last good checkpoint (iteration 1)" in run.info["error"]
        assert load_checkpoint(run.checkpoint_dir / "last.pt")["iteration"] == 1  # and finite: load checks it


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_and_marks_the_run_failed(tiny_run, monkeypatch):
    import rsdet.engine.trainer as trainer

    real_save = trainer.save_checkpoint
    calls = []

    def second_write_hits_the_limit(*args, **kwargs):  # what a full disk looks like to the writer
        calls.append(kwargs["iteration"])
        if len(calls) < 2:
            return real_save(*args, **kwargs)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            return real_save(*args, **kwargs)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    monkeypatch.setattr(trainer, "save_checkpoint", second_write_hits_the_limit)
    assert train_cli.main([*tiny_run, "eval.enabled=false"]) == 1
    (run,) = _runs()
    assert run.status == "failed" and calls == [2, 4]
    assert "could not write the checkpoint of iteration 4" in run.info["error"]
    assert "File too large" in run.info["error"] and "Traceback" not in run.info["error"]
    assert load_checkpoint(run.checkpoint_dir / "last.pt")["iteration"] == 2
    assert [p.name for p in run.checkpoint_dir.iterdir()] == ["last.pt"]  # no temporary file left


def _as_format_2(path: Path) -> None:
    """Rewrite a checkpoint the way rsdet 0.1 wrote it: numpy's and Python's RNG states as they come."""
    state = torch.load(path, weights_only=True)
    py, npy = state["rng"]["python"], state["rng"]["numpy"]
    state["rng"]["python"] = (py["version"], tuple(py["state"].tolist()), py["gauss_next"])
    state["rng"]["numpy"] = (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"])
    state["format_version"] = 2
    torch.save(state, path)


def test_sigterm_during_the_final_evaluation_is_an_interrupted_run_that_resume_finishes(tiny_run, monkeypatch):
    import rsdet.engine.trainer as trainer

    real_evaluate = trainer.evaluate_model

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate_model", terminated)
    with pytest.raises(KeyboardInterrupt):
        train_cli.main(tiny_run)
    (run,) = _runs()
    assert run.status == "interrupted" and run.metrics is None
    assert load_checkpoint(run.checkpoint_dir / "last.pt")["iteration"] == 4
    monkeypatch.setattr(trainer, "evaluate_model", real_evaluate)

    _as_format_2(run.checkpoint_dir / "last.pt")  # a checkpoint of the earlier format: only with the opt-in
    before = _snapshot(run.dir)
    assert train_cli.main([*tiny_run, "resume=true"]) == 1
    assert LEGACY_OVERRIDE in train_cli.OUTCOMES[0]["error"]
    assert _snapshot(run.dir) == before
    assert train_cli.main([*tiny_run, "resume=true", LEGACY_OVERRIDE]) == 0
    done = RunRecord(run.dir, create=False)
    assert done.status == "completed" and "AP" in done.metrics["bbox"] and done.metrics["iterations"] == 4
    assert [r["iteration"] for r in done.read_history()] == [1, 2, 3, 4]


# rsdet train that holds still before iteration STALL_AT + 1 until the file "go" appears
STALLING = """
import sys, time
from pathlib import Path
import rsdet.engine.trainer as trainer
real_set_lr = trainer.set_lr
def set_lr(optimizer, plan, it):
    if it == {stall_at}:
        Path("reached").write_text(str(it))
        while not Path("go").exists():
            time.sleep(0.05)
    return real_set_lr(optimizer, plan, it)
trainer.set_lr = set_lr
from rsdet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env(shapes_cache):
    return {**os.environ, "RSDET_CACHE": str(shapes_cache), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                                                  if p)}


@pytest.mark.slow
def test_two_runs_started_together_write_two_folders_each_row_once(tiny_run, shapes_cache, tmp_path):
    overrides = [*tiny_run, "eval.enabled=false", "schedule.max_iters=2"]
    procs = [subprocess.Popen([sys.executable, "-m", "rsdet", "train", *overrides], cwd=tmp_path,
                              env=_env(shapes_cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        assert proc.wait(300) == 0, proc.stderr.read()[-2000:]
    runs = _runs()
    assert len(runs) == 2 and len({r.dir for r in runs}) == 2
    assert sorted(r.info["pid"] for r in runs) == sorted(p.pid for p in procs)  # one writer per directory
    for run in runs:
        assert [r["iteration"] for r in run.read_history()] == [1, 2]


@pytest.mark.slow
def test_two_resumes_of_one_run_one_continues_the_other_is_told_who_has_it(tiny_run, shapes_cache, tmp_path,
                                                                          monkeypatch):
    import rsdet.engine.trainer as trainer

    real_set_lr = trainer.set_lr

    def stop_in_iteration_3(optimizer, plan, it):
        if it == 2:
            raise KeyboardInterrupt
        return real_set_lr(optimizer, plan, it)

    overrides = [*tiny_run, "eval.enabled=false"]
    monkeypatch.setattr(trainer, "set_lr", stop_in_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        train_cli.main(overrides)
    monkeypatch.setattr(trainer, "set_lr", real_set_lr)
    (run,) = _runs()
    assert run.status == "interrupted" and [r["iteration"] for r in run.read_history()] == [1, 2]

    first = subprocess.Popen([sys.executable, "-c", STALLING.format(stall_at=3), "train", *overrides, "resume=true"],
                             cwd=tmp_path, env=_env(shapes_cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not Path("reached").exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the first resume did not start training"
            time.sleep(0.05)
        assert train_cli.main([*overrides, "resume=true"]) == 1  # the run is live: not taken
        assert f"pid {first.pid}" in train_cli.OUTCOMES[0]["error"]
        Path("go").write_text("")
        assert first.wait(300) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    done = RunRecord(run.dir, create=False)
    assert done.status == "completed" and done.info["pid"] == first.pid
    assert [r["iteration"] for r in done.read_history()] == [1, 2, 3, 4]  # every row once
