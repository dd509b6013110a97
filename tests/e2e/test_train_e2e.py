"""End to end: a few training iterations of each recipe on a tiny shapes split, evaluation, run records,
resume after Ctrl-C and SIGTERM, a failing multirun job, and bad input (exact resume after a kill and
resumed sweeps followed by `rsdet report` are in test_resume_e2e.py)."""

import json
from pathlib import Path

import pytest
import torch

from rsdet import train_cli
from rsdet.records import RunRecord, find_runs
from rsdet.report.cli import main as report_main


def _runs(root="outputs"):
    return find_runs(Path(root))


def _only_run():
    runs = _runs()
    assert len(runs) == 1, [r.dir for r in runs]
    return runs[0]


@pytest.mark.parametrize("loss", ["rs", "ce", "focal", "ap", "alrp"])
def test_recipe_trains_evaluates_and_writes_a_complete_record(tiny_run, loss):
    assert train_cli.main([f"loss={loss}", *tiny_run]) == 0
    run = _only_run()
    assert run.info["status"] == "completed"
    assert run.info["choices"]["loss"] == loss and run.info["iteration"] == 4
    assert (run.dir / "config.yaml").is_file() and (run.dir / "checkpoints" / "last.pt").is_file()
    history = run.read_history()
    assert [row["iteration"] for row in history] == [1, 2, 3, 4]
    keys = set(history[0])
    expected_terms = {"loss/rpn_rank", "loss/rpn_sort", "loss/rpn_box", "loss/rcnn_rank", "loss/rcnn_sort",
                      "loss/rcnn_box"} if loss == "rs" else {"loss/rpn_cls", "loss/rpn_box", "loss/rcnn_cls",
                                                             "loss/rcnn_box"}
    assert expected_terms <= keys
    assert {"lr", "sec_per_iter", "ratio/rpn/task_neg_per_pos", "ratio/rcnn/instance_neg_per_pos"} <= keys
    if loss == "ce":  # random sampler: at most 256 anchors per image
        assert history[0]["ratio/rpn/num_pos"] + history[0]["ratio/rpn/num_neg"] <= 2 * 256
    metrics = run.metrics
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN"):
        assert k in metrics["bbox"]
    preds = json.loads(run.predictions_path("bbox").read_text())
    assert isinstance(preds, list)


def test_ctrl_c_then_resume_continues_the_run_and_its_wandb_run(tiny_run, monkeypatch):
    import os
    import signal

    import rsdet.engine.trainer as trainer

    real_set_lr = trainer.set_lr

    def ctrl_c_during_iteration_3(optimizer, plan, it):
        if it == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_set_lr(optimizer, plan, it)

    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in tiny_run if not o.startswith("logger")] + ["logger=wandb", "logger.log_every=1"]
    monkeypatch.setattr(trainer, "set_lr", ctrl_c_during_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        train_cli.main(overrides)
    run = _only_run()
    assert run.info["status"] == "interrupted" and "resume=true" in run.info["error"]
    state = torch.load(run.checkpoint_dir / "last.pt", weights_only=False)
    assert state["iteration"] == 3  # the iteration in progress finishes, then the checkpoint
    wandb_id = run.info["wandb_id"]
    assert wandb_id

    monkeypatch.setattr(trainer, "set_lr", real_set_lr)
    assert train_cli.main([*overrides, "resume=true"]) == 0
    resumed = RunRecord(run.dir, create=False)
    assert resumed.info["status"] == "completed" and resumed.info["iteration"] == 4
    assert [r["iteration"] for r in resumed.read_history()] == [1, 2, 3, 4]
    assert resumed.metrics["iterations"] == 4
    # W&B offline needs no network; the resumed run logs into the same W&B run id
    assert resumed.info["wandb_id"] == wandb_id
    offline = list((run.dir / "wandb").glob("offline-run-*"))
    assert offline and all(p.name.endswith(wandb_id) and list(p.glob("*.wandb")) for p in offline)


def test_a_failing_job_does_not_stop_the_sweep(tiny_run, capsys):
    code = train_cli.main(["-m", "loss.delta=0.5,-1", *tiny_run])
    assert code == 1
    runs = _runs(next(Path("outputs/multirun").glob("*/*")))
    status = sorted(r.info["status"] for r in runs)
    assert status == ["completed", "failed"]
    failed = next(r for r in runs if r.info["status"] == "failed")
    assert "delta" in failed.info["error"]
    assert "1/2 jobs completed" in capsys.readouterr().out


def test_images_without_objects_train_as_negatives(tiny_run):
    """Every image empty: every batch has zero positives; losses stay finite, nothing crashes."""
    from PIL import Image

    folder = Path("empty")
    folder.mkdir()
    images = []
    for i in range(4):
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(folder / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
    ann = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    (folder / "ann.json").write_text(json.dumps(ann))
    paths = [f"dataset.{split}.{key}={folder}" + ("/ann.json" if key == "annotations" else "")
             for split in ("train", "val") for key in ("images", "annotations")]
    keep = [o for o in tiny_run if not o.startswith("dataset.generate")]
    assert train_cli.main(["dataset=coco_format", *paths, "dataset.min_size=64", "dataset.max_size=64", *keep]) == 0
    run = _only_run()
    history = run.read_history()
    assert history[-1]["batches_without_positives"] == 4
    assert all(row["loss/rcnn_rank"] == 0.0 for row in history)
    assert run.metrics["bbox"]["AP"] == -1  # no ground truth at all: undefined, as pycocotools


def test_missing_dataset_path_fails_with_the_config_key(tiny_run):
    code = train_cli.main(["dataset=coco_format", "dataset.train.images=nowhere/images",
                           "dataset.train.annotations=nowhere/train.json", "dataset.val.images=nowhere/images",
                           "dataset.val.annotations=nowhere/val.json", "logger=none"])
    assert code == 1
    run = _only_run()
    assert run.info["status"] == "failed"
    assert "nowhere" in run.info["error"] and "dataset.train" in run.info["error"]


def test_nan_loss_stops_naming_iteration_and_term_and_keeps_checkpoint(tiny_run, monkeypatch):
    from rsdet.models.criterion import Criterion

    real_call = Criterion.forward
    calls = {"n": 0}

    def poisoned(self, out, num_images):
        terms, stats = real_call(self, out, num_images)
        if out.name == "rcnn":
            calls["n"] += 1
            if calls["n"] == 3:
                terms["rcnn_box"] = terms["rcnn_box"] * float("nan")
        return terms, stats

    monkeypatch.setattr(Criterion, "forward", poisoned)
    assert train_cli.main(tiny_run) == 1
    run = _only_run()
    assert run.info["status"] == "failed"
    assert "rcnn_box" in run.info["error"] and "iteration 3" in run.info["error"]
    assert torch.load(run.checkpoint_dir / "last.pt", weights_only=False)["iteration"] == 2


def test_evaluate_a_trained_run_with_a_threshold_sweep(tiny_run, capsys):
    from rsdet.evaluation.cli import main as evaluate_main

    assert train_cli.main(tiny_run) == 0
    run = _only_run()
    assert evaluate_main([str(run.dir), "--score-thresholds", "0.01,0.4", "--out", "sweep"]) == 0
    data = json.loads(Path("sweep/threshold_sweep.json").read_text())
    assert data["device"] == "cpu"
    assert [row["threshold"] for row in data["rows"]] == [0.01, 0.4]
    assert all(row["fps"] > 0 for row in data["rows"])
    assert {"md", "csv", "tex"} <= {p.suffix.lstrip(".") for p in Path("sweep").glob("threshold_sweep.*")}
    # a checkpoint path works as well, with the run's own threshold
    assert evaluate_main([str(run.checkpoint_dir / "last.pt"), "--out", "single"]) == 0
    assert "AP" in capsys.readouterr().out


def test_evaluate_writes_beside_a_runs_record_unless_told_to_overwrite(tiny_run):
    from rsdet.data.build import dataset_eval_info
    from rsdet.evaluation.cli import main as evaluate_main

    assert train_cli.main([*tiny_run, "eval.max_images=3"]) == 0
    run = _only_run()
    record = {name: (run.dir / name).read_bytes() for name in ("metrics.json", "predictions_bbox.json")}
    gt = dataset_eval_info(run.config["dataset"], "val")["ann_file"]
    assert evaluate_main([str(run.dir)]) == 0  # every validation image, not the run's 3
    assert evaluate_main([gt, str(run.predictions_path("bbox"))]) == 0  # a results file inside the run
    assert {name: (run.dir / name).read_bytes() for name in record} == record
    beside = json.loads((run.dir / "metrics_eval.json").read_text())
    assert "bbox" in beside and (run.dir / "predictions_bbox_eval.json").is_file()

    assert evaluate_main([str(run.dir), "--overwrite"]) == 0
    metrics = json.loads((run.dir / "metrics.json").read_text())
    kept = json.loads(record["metrics.json"])
    assert metrics["train_seconds"] == kept["train_seconds"] and metrics["iterations"] == 4
    assert len(json.loads(run.predictions_path("bbox").read_text())) == metrics["num_detections"]


def test_sigterm_stops_at_the_next_iteration_with_a_checkpoint(tiny_run, monkeypatch):
    """SIGTERM (preemption) lets the running iteration finish, checkpoints it, and marks the run
    interrupted; the signal handlers are put back afterwards."""
    import os
    import signal

    import rsdet.engine.trainer as trainer

    real_set_lr = trainer.set_lr

    def terminate_during_iteration_3(optimizer, plan, it):
        if it == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_set_lr(optimizer, plan, it)

    monkeypatch.setattr(trainer, "set_lr", terminate_during_iteration_3)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(KeyboardInterrupt):
        train_cli.main(tiny_run)
    run = _only_run()
    assert run.info["status"] == "interrupted" and run.info["iteration"] == 3
    state = torch.load(run.checkpoint_dir / "last.pt", weights_only=False)
    assert state["iteration"] == 3 and state["data"]["batch"] == 3
    assert [r["iteration"] for r in run.read_history()] == [1, 2, 3]
    assert {s: signal.getsignal(s) for s in before} == before
