"""COCO protocol: rsdet.evaluation.evaluate equals pycocotools' COCOeval.stats, plus edge cases."""

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluation_testdata as td  # noqa: E402

from rsdet.evaluation import evaluate, metric_keys  # noqa: E402


@pytest.fixture(scope="module")
def gt():
    return td.synthetic_coco(seed=3)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("max_dets", [None, 3])
def test_equals_pycocotools(gt, iou_type, max_dets):
    dets = td.perturbed_detections(gt, seed=4, iou_type=iou_type)
    ours = evaluate(gt, dets, iou_type=iou_type, max_dets=max_dets)
    ref = td.coco_reference(gt, dets, iou_type, max_dets=max_dets or 100)
    assert list(ours) == list(metric_keys("coco"))
    for key, value in zip(td.COCO_AP_KEYS, ref.stats):
        assert ours[key] == pytest.approx(float(value), abs=1e-12), key
    assert all(isinstance(v, float) for v in ours.values())
    # and oLRP under the same (possibly truncated) matching equals the definition
    lrp = td.reference_olrp(ref, "coco", iou_type)
    assert ours["oLRP"] == pytest.approx(td.mean_defined(v[0] for v in lrp.values()), abs=1e-9)


def test_segm_sizes_use_the_mask_area():
    # One medium object (50x50 mask = 2500 px). A higher-scored false positive has a 50x50 mask
    # too but a 150x150 box. By mask area (ours, detectron2) it is medium: ranking FP, TP gives
    # precision 1/2 at full recall, APm = 0.5. pycocotools' loadRes would take the box area
    # (22500 > 96^2, large) and ignore it in the medium range: APm = 1.
    square = lambda x, y: [[x, y, x + 50, y, x + 50, y + 50, x, y + 50]]  # noqa: E731
    gt = {"images": [{"id": 1, "width": 640, "height": 480}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 50, 50],
                           "area": 2500, "iscrowd": 0, "segmentation": square(100, 100)}],
          "categories": [{"id": 1, "name": "a"}]}
    dets = [{"image_id": 1, "category_id": 1, "score": 0.95, "bbox": [300, 300, 150, 150],
             "segmentation": td.rle_of(square(300, 300), 480, 640)},
            {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [100, 100, 50, 50],
             "segmentation": td.rle_of(square(100, 100), 480, 640)}]
    ours = evaluate(gt, dets, iou_type="segm")
    assert (ours["AP"], ours["APm"]) == pytest.approx((0.5, 0.5), abs=1e-12)
    by_box = dict(zip(td.COCO_AP_KEYS, td.coco_reference(gt, dets, "segm", drop_bbox=False).stats))
    assert (by_box["AP"], by_box["APm"]) == pytest.approx((0.5, 1.0), abs=1e-12)


def test_empty_detections(gt):
    m = evaluate(gt, [], per_class=True)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR100", "ARs", "ARl"):
        assert m[key] == 0.0, key
    assert (m["oLRP"], m["oLRP_FN"], m["oLRP_Loc"], m["oLRP_FP"]) == (1.0, 1.0, -1.0, -1.0)
    assert set(m["per_class"]) == {1, 2, 3}  # class 4 has no ground truth
    assert all(c["oLRP"] == 1.0 and c["AP"] == 0.0 for c in m["per_class"].values())


def test_ground_truth_without_objects_is_undefined():
    gt = {"images": [{"id": 1, "width": 10, "height": 10}], "annotations": [],
          "categories": [{"id": 1, "name": "a"}]}
    m = evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])
    assert all(v == -1.0 for v in m.values())


def test_detections_on_crowd_regions_and_classes_without_gt_change_nothing(gt):
    dets = td.perturbed_detections(gt, seed=4)
    base = evaluate(gt, dets, per_class=True)
    # Low scores: ignored detections still take maxDets slots in pycocotools (AR1 would change).
    extra = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.001,
              "bbox": [a["bbox"][0] + 1, a["bbox"][1] + 1, a["bbox"][2] / 2, a["bbox"][3] / 2]}
             for a in gt["annotations"] if a["iscrowd"]]
    extra += [{"image_id": 1, "category_id": 4, "bbox": [0, 0, 50, 50], "score": 0.99}]
    assert len(extra) > 5
    assert evaluate(gt, dets + extra, per_class=True) == base
    assert 4 not in base["per_class"]


def test_inputs_are_not_modified_and_paths_work(gt, tmp_path):
    dets = td.perturbed_detections(gt, seed=5, iou_type="segm")
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    from_objects = evaluate(gt, dets, iou_type="segm")
    assert gt == gt_before and dets == dets_before
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    from_paths = evaluate(tmp_path / "gt.json", str(tmp_path / "dets.json"), iou_type="segm")
    assert from_paths == from_objects


def test_gt_without_iscrowd_field(gt):
    stripped = copy.deepcopy(gt)
    for a in stripped["annotations"]:
        if not a.pop("iscrowd"):
            continue
        a["ignore"] = 1  # pycocotools would drop this flag; check we do not crash either way
    stripped["annotations"] = [a for a in stripped["annotations"] if "ignore" not in a]
    kept = copy.deepcopy(gt)
    kept["annotations"] = [a for a in kept["annotations"] if not a["iscrowd"]]
    dets = td.perturbed_detections(gt, seed=4)
    assert evaluate(stripped, dets) == evaluate(kept, dets)
