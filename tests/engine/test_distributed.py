"""Data-parallel training on the CPU with gloo (docs/distributed.md).

- one step of 2 processes × 2 images equals one process with 4 images ranked in groups of 2
  (``schedule.ranking_group=2``, the paper's per-GPU ranking list) — loss terms to 1e-6, parameters
  after the step to 1e-5. The backbone uses GroupNorm (``detector.backbone.norm=gn``), whose statistics
  are per image: trainable BN would normalise each process' 2 images on their own (frozen BN needs
  pretrained weights, which a test cannot download, and torch's SyncBatchNorm has no CPU kernel);
- the 2-process run writes exactly one run record, with ``world_size: 2``, and a sharded evaluation
  gathered on rank 0 that finds the single-process run's detections;
- killing one process ends the run within 60 s with the record marked failed and the rank named.
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
from rsdet.engine.loader import ResumableBatchSampler
from rsdet.records import find_runs

REPO = Path(__file__).resolve().parents[2]
ONE_STEP = [o for o in TINY if not o.startswith(("schedule.max_iters", "schedule.batch_size"))]
ONE_STEP += ["schedule.max_iters=1", "schedule.batch_size=4", "detector.backbone.norm=gn",
             "eval.max_images=4"]


def test_each_rank_takes_its_contiguous_slice_of_the_same_global_batches():
    one = ResumableBatchSampler(10, 4, seed=3, drop_last=True)
    ranks = [ResumableBatchSampler(10, 4, seed=3, drop_last=True, rank=r, world_size=2) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(1, 1)
    for whole, first, second in zip(one, *ranks):
        assert first == whole[:2] and second == whole[2:]
    short = ResumableBatchSampler(3, 4, seed=0, drop_last=False, rank=1, world_size=2)
    assert [len(b) for b in short] == [2]  # a short final batch is split as evenly as it goes


def test_each_launch_keeps_its_own_rendezvous_port_bound():
    """Two `distributed.nproc` launches at once cannot meet on one port: each launcher's store holds its
    port (picked by the kernel) until its workers are done, and workers join it by that port."""
    from rsdet.engine.distributed import join_store, serve_store

    (first, port1), (second, port2) = serve_store(30), serve_store(30)
    assert port1 != port2 and port1 > 0
    join_store(port1, 30).set("rank1", "here")
    assert first.get("rank1") == b"here"
    del first, second


def _run(root: Path, overrides: list[str]):
    assert train_cli.main(overrides) == 0
    runs = find_runs(root / "outputs")
    assert len(runs) == 1, [r.dir for r in runs]
    return runs[0]


def _params(run) -> dict[str, torch.Tensor]:
    state = torch.load(run.checkpoint_dir / "last.pt", weights_only=False, map_location="cpu")
    return state["model"]


@pytest.mark.slow
def test_two_processes_of_two_images_equal_one_process_of_four_in_ranking_groups_of_two(tiny_run, tmp_path):
    ddp = _run(tmp_path, ONE_STEP + ["distributed.nproc=2"])
    assert ddp.status == "completed" and ddp.info["world_size"] == 2 and ddp.info["per_rank_batch"] == 2
    assert not (ddp.dir / ".dist").exists() or not list((ddp.dir / ".dist").iterdir())
    os.rename(tmp_path / "outputs", tmp_path / "ddp")
    (ddp,) = find_runs(tmp_path / "ddp")
    single = _run(tmp_path, ONE_STEP + ["schedule.ranking_group=2"])
    assert single.info["world_size"] == 1

    (row_ddp,), (row_single,) = ddp.read_history(), single.read_history()
    losses = [k for k in row_single if k.startswith("loss/")]
    assert len(losses) >= 5 and set(losses) == {k for k in row_ddp if k.startswith("loss/")}
    for key in losses:
        assert row_ddp[key] == pytest.approx(row_single[key], abs=1e-6, rel=0), key
    for key in ("ratio/rcnn/num_pos", "ratio/rpn/num_neg"):  # per global batch in both
        assert row_ddp[key] == pytest.approx(row_single[key]), key

    a, b = _params(ddp), _params(single)
    assert a.keys() == b.keys()
    floats = [k for k in a if torch.is_tensor(a[k]) and a[k].is_floating_point()]
    assert len(floats) > 50
    worst = max((a[k] - b[k]).abs().max().item() for k in floats)
    assert worst < 1e-5

    # the sharded evaluation (images 0, 2 on rank 0 and 1, 3 on rank 1) gathers the same detections
    dets_ddp = json.loads(ddp.predictions_path().read_text())
    dets_single = json.loads(single.predictions_path().read_text())
    assert [(d["image_id"], d["category_id"]) for d in dets_ddp] == [(d["image_id"], d["category_id"])
                                                                      for d in dets_single]
    for x, y in zip(dets_ddp, dets_single):
        assert x["bbox"] == pytest.approx(y["bbox"], abs=0.05) and x["score"] == pytest.approx(y["score"], abs=1e-4)
    assert ddp.metrics["num_detections"] == single.metrics["num_detections"]


CHILD_ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.mark.slow
def test_killing_one_process_ends_the_run_with_a_failed_record(tiny_run, tmp_path):
    overrides = [o for o in tiny_run if not o.startswith("schedule.max_iters")]
    overrides += ["schedule.max_iters=100000", "distributed.nproc=2", "eval.enabled=false"]
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "rsdet", "train", *overrides], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        run = None
        while time.monotonic() < deadline:  # wait until both ranks train: a history row exists
            runs = find_runs(tmp_path / "outputs") if (tmp_path / "outputs").is_dir() else []
            if runs and runs[0].history_path.is_file() and runs[0].history_path.read_text().strip():
                run = runs[0]
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        assert run is not None, "the run did not start training within 120 s"
        run.reload()
        victim = run.info["worker_pids"][1]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        assert time.monotonic() - killed_at < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    run.reload()
    assert run.status == "failed", run.info
    assert f"rank 1 (pid {victim}) was killed by SIGKILL" in run.info["error"]
    for pid in run.info["worker_pids"]:  # no process is left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
