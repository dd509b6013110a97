"""End to end for Mask R-CNN: RS-Mask R-CNN and the standard Mask R-CNN (CE) train, evaluate boxes and
masks and write a complete record (segm block, predictions_segm.json in COCO RLE); the S11 mask sweep,
the segm report metric and per-epoch mask evaluation work from the run record."""

import json
from pathlib import Path

from rsdet import train_cli
from rsdet.evaluation.evaluator import LRP_KEYS
from rsdet.records import find_runs


def _only_run():
    runs = find_runs(Path("outputs"))
    assert len(runs) == 1, [r.dir for r in runs]
    return runs[0]


def _check_record(run, loss):
    history = run.read_history()
    parts = ("rank", "sort", "box") if loss == "rs" else ("cls", "box")
    terms = {k for k in history[0] if k.startswith("loss/")}
    assert terms == {"loss/total", "loss/rcnn_mask"} | {f"loss/{s}_{p}" for s in ("rpn", "rcnn") for p in parts}
    for iou_type in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75", *LRP_KEYS} <= set(run.metrics[iou_type])
    segm = json.loads(run.predictions_path("segm").read_text())
    boxes = json.loads(run.predictions_path("bbox").read_text())
    assert len(segm) == len(boxes) == run.metrics["num_detections"] > 0
    first = segm[0]
    assert set(first) == {"image_id", "category_id", "segmentation", "score"}
    assert isinstance(first["segmentation"]["counts"], str) and len(first["segmentation"]["size"]) == 2
    assert "segmentation" not in boxes[0]


def test_standard_mask_rcnn_trains_and_writes_box_and_mask_results(tiny_run):
    assert train_cli.main(["detector=mask_rcnn", "loss=ce", "eval.score_thresh=0.0", *tiny_run]) == 0
    run = _only_run()
    assert run.info["status"] == "completed" and run.info["iteration"] == 4
    _check_record(run, "ce")


def test_rs_mask_rcnn_record_per_epoch_mask_ap_s11_sweep_and_segm_report_metric(tiny_run, capsys):
    from rsdet.evaluation.cli import main as eval_main
    from rsdet.report.cli import main as report_main

    # 12 training images, batch 2: the 7 iterations cross one epoch boundary (evaluated there too)
    overrides = [o for o in tiny_run if not o.startswith("schedule.max_iters")]
    assert train_cli.main(["detector=mask_rcnn", "eval.score_thresh=0.0", *overrides, "schedule.max_iters=7",
                           "eval.every_epochs=1"]) == 0
    run = _only_run()
    assert run.info["status"] == "completed" and run.info["iteration"] == 7
    _check_record(run, "rs")
    assert "AP" in run.metrics["epoch1"] and "segm/AP" in run.metrics["epoch1"]
    assert "segm" in run.read_eval_history()[0] and (run.dir / "predictions_segm_epoch1.json").is_file()
    capsys.readouterr()
    assert eval_main([str(run.dir), "--score-thresholds", "0,0.4"]) == 0
    assert "Score-threshold sweep, mask AP" in capsys.readouterr().out
    sweep = json.loads((run.dir / "threshold_sweep_segm.json").read_text())
    assert sweep["iou_type"] == "segm" and [r["threshold"] for r in sweep["rows"]] == [0.0, 0.4]
    assert {"AP", "APbox", "oLRP"} <= set(sweep["rows"][0]["metrics"])
    box_sweep = json.loads((run.dir / "threshold_sweep.json").read_text())
    assert sweep["rows"][0]["metrics"]["APbox"] == box_sweep["rows"][0]["metrics"]["AP"]
    table = (run.dir / "threshold_sweep_segm.md").read_text()
    assert "AP_box" in table and "oLRP" in table and "fps" in table
    assert report_main(["outputs", "--rows", "loss", "--metric", "segm/AP,AP", "--no-write"]) == 0
    assert "mask AP" in capsys.readouterr().out  # the report names segm/AP so


def test_mask_rcnn_on_long_tailed_data_reports_mask_apr_apc_apf(tiny_run):
    overrides = [o for o in tiny_run if not o.startswith("dataset.generate.num_")]
    assert train_cli.main(["detector=mask_rcnn", "dataset=shapes_lvis", "dataset.generate.num_train=24",
                           "dataset.generate.num_val=8", *overrides]) == 0
    run = _only_run()
    assert run.metrics["score_thresh"] == 0.60
    assert {"APr", "APc", "APf", "oLRP"} <= set(run.metrics["segm"])
