"""Inference helpers shared by training-time evaluation and `rsdet evaluate RUN`."""

import json
from pathlib import Path
from types import SimpleNamespace

from omegaconf import OmegaConf

from rsdet.engine.inference import eval_score_thresh, ground_truth_for


def test_eval_score_thresh_prefers_eval_override():
    cfg = OmegaConf.create({"eval": {"score_thresh": None}, "loss": {"test_score_thresh": 0.4}})
    assert eval_score_thresh(cfg) == 0.4
    cfg.eval.score_thresh = 0.05
    assert eval_score_thresh(cfg) == 0.05


def test_ground_truth_is_cut_to_the_evaluated_images(tmp_path):
    ann = {"images": [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in (5, 2, 9)],
           "annotations": [{"id": k, "image_id": i, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0}
                           for k, i in enumerate((5, 2, 9, 9))],
           "categories": [{"id": 1, "name": "x"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    dataset = SimpleNamespace(image_ids=[5, 2, 9])  # dataset order, not sorted ids
    assert ground_truth_for(str(path), dataset, None) == str(path)
    cut = ground_truth_for(str(path), dataset, 2)
    assert [im["id"] for im in cut["images"]] == [5, 2]
    assert sorted(a["image_id"] for a in cut["annotations"]) == [2, 5]


# ---------------------------------------------------------------- masks (segm)
def test_masks_become_rle_at_probability_half_and_segm_records_pair_with_boxes():
    import numpy as np
    import pytest
    import torch
    from pycocotools import mask as mask_utils

    from rsdet.engine.inference import _to_coco, encode_masks, predictions_path_for, split_iou_types
    from rsdet.errors import RsdetError

    probs = torch.zeros(2, 1, 4, 5)
    probs[0, 0, 1:3, 1:4] = 0.5      # exactly 0.5 is inside
    probs[0, 0, 0, 0] = 0.49         # just below is outside
    probs[1, 0, 3, 4] = 0.9
    rles = encode_masks(probs)
    assert all(set(r) == {"size", "counts"} and isinstance(r["counts"], str) and r["size"] == [4, 5] for r in rles)
    expected = np.zeros((4, 5), dtype=np.uint8)
    expected[1:3, 1:4] = 1
    assert np.array_equal(mask_utils.decode(rles[0]), expected)
    assert int(mask_utils.decode(rles[1]).sum()) == 1 and mask_utils.decode(rles[1])[3, 4] == 1

    det = {"boxes": torch.tensor([[1.0, 1, 4, 3], [4, 3, 5, 4]]), "scores": torch.tensor([0.9, 0.3]),
           "labels": torch.tensor([0, 1]), "masks": probs}
    records = _to_coco(det, 7, [11, 12])
    per_type = split_iou_types(records, ["bbox", "segm"])
    assert [r["category_id"] for r in per_type["segm"]] == [11, 12] and "segmentation" not in per_type["bbox"][0]
    assert per_type["segm"][0]["segmentation"] == rles[0] and per_type["segm"][1]["score"] == 0.3
    with pytest.raises(RsdetError, match="without masks"):
        split_iou_types(per_type["bbox"], ["bbox", "segm"], "faster_rcnn")
    assert split_iou_types([], ["bbox", "segm"]) == {"bbox": [], "segm": []}
    assert predictions_path_for(Path("run/predictions_bbox_epoch2.json"), "segm").name == "predictions_segm_epoch2.json"


def test_segm_needs_the_data_sets_masks():
    import pytest
    from hydra import compose, initialize_config_dir

    from rsdet.engine.inference import check_iou_types
    from rsdet.errors import RsdetError
    from rsdet.train_cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["detector=mask_rcnn", "dataset.with_masks=false"])
    with pytest.raises(RsdetError, match="dataset.with_masks=false"):
        check_iou_types(cfg)
    # mask AP alone is a valid choice (a mask-only detector takes its boxes from its masks, so box AP
    # stays possible but is not required)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["detector=mask_rcnn", "eval.iou_types=[segm]"])
    assert check_iou_types(cfg) == ["segm"]
    for bad, match in (("[segm,segm]", "twice"), ("[bbox,mask]", "'mask'.* not an evaluation")):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["detector=mask_rcnn", f"eval.iou_types={bad}"])
        with pytest.raises(RsdetError, match=match):
            check_iou_types(cfg)
    # evaluation during training keys its rows by box AP (metrics_history.jsonl)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["detector=mask_rcnn", "eval.iou_types=[segm]", "eval.every_epochs=1"])
    with pytest.raises(RsdetError, match="include bbox"):
        check_iou_types(cfg)
