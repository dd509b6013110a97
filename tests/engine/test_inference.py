"""Inference helpers shared by training-time evaluation and `rsdet evaluate RUN`."""

import json
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
