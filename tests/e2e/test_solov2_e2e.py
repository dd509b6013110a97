"""End to end for SOLOv2: RS-SOLOv2 and the standard SOLOv2 (focal) train on the shapes masks and evaluate
masks and the boxes taken from them (segm and bbox blocks, predictions_segm.json in COCO RLE)."""

import json
from pathlib import Path

import pytest

from rsdet import train_cli
from rsdet.records import find_runs

SMALL = ["detector.backbone.fpn_channels=32", "detector.head.feat_channels=32", "detector.head.kernel_channels=16",
         "detector.mask_feat.channels=16", "eval.score_thresh=0.0"]


@pytest.mark.parametrize("loss", ["rs", "focal"])
def test_solov2_trains_and_evaluates_masks_and_boxes(tiny_dense_run, loss):
    assert train_cli.main(["detector=solov2", f"loss={loss}", *SMALL, *tiny_dense_run]) == 0
    runs = find_runs(Path("outputs"))
    assert len(runs) == 1
    run = runs[0]
    assert run.info["status"] == "completed" and run.info["iteration"] == 4
    assert run.info["choices"]["detector"] == "solov2"
    terms = {k for k in run.read_history()[0] if k.startswith("loss/")}
    assert terms - {"loss/total"} == ({"loss/head_rank", "loss/head_sort", "loss/head_mask"} if loss == "rs"
                     else {"loss/head_cls", "loss/head_mask"})
    assert run.config["eval"]["iou_types"] == ["bbox", "segm"]
    for iou_type in ("bbox", "segm"):
        assert "AP" in run.metrics[iou_type]
    segm = json.loads(run.predictions_path("segm").read_text())
    boxes = json.loads(run.predictions_path("bbox").read_text())
    assert len(segm) == len(boxes) == run.metrics["num_detections"] > 0
    assert isinstance(segm[0]["segmentation"]["counts"], str)
