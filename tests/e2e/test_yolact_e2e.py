"""End to end for YOLACT: RS-YOLACT and the standard YOLACT train on the shapes masks, evaluate boxes and masks
(segm block, predictions_segm.json in COCO RLE) and write a complete record; Dice continuous labels
(supplementary Table S6) train too."""

import json
from pathlib import Path

import pytest

from rsdet import train_cli
from rsdet.evaluation.evaluator import LRP_KEYS
from rsdet.records import find_runs

SMALL = ["detector.backbone.fpn_channels=64", "detector.proto.channels=16"]


def _only_run():
    runs = find_runs(Path("outputs"))
    assert len(runs) == 1, [r.dir for r in runs]
    return runs[0]


@pytest.mark.parametrize("loss, extra", [("rs", []), ("ce", []), ("rs", ["loss.label=dice"])])
def test_yolact_trains_and_writes_a_complete_record(tiny_dense_run, loss, extra):
    assert train_cli.main(["detector=yolact", f"loss={loss}", *SMALL, *extra, *tiny_dense_run]) == 0
    run = _only_run()
    assert run.info["status"] == "completed" and run.info["iteration"] == 4
    assert run.info["choices"]["detector"] == "yolact"
    history = run.read_history()
    assert [row["iteration"] for row in history] == [1, 2, 3, 4]
    terms = {k for k in history[0] if k.startswith("loss/")}
    if loss == "rs":
        assert {"loss/head_rank", "loss/head_sort", "loss/head_box", "loss/head_mask"} <= terms
    else:
        assert {"loss/head_cls", "loss/head_box", "loss/head_mask"} <= terms
        assert all(row["ratio/head/instance_neg_per_pos"] == 3 for row in history)  # OHEM 3:1
    assert run.metrics["score_thresh"] == 0.05
    assert run.config["eval"]["iou_types"] == ["bbox", "segm"]  # a mask detector: mask AP by default
    for iou_type in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75", *LRP_KEYS} <= set(run.metrics[iou_type])
    segm = json.loads(run.predictions_path("segm").read_text())
    boxes = json.loads(run.predictions_path("bbox").read_text())
    assert len(segm) == len(boxes) == run.metrics["num_detections"] > 0
    assert set(segm[0]) == {"image_id", "category_id", "segmentation", "score"}
    assert isinstance(segm[0]["segmentation"]["counts"], str) and len(segm[0]["segmentation"]["size"]) == 2
    assert "segmentation" not in boxes[0]
