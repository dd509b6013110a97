"""Bad input gives a DataError/ConfigError naming the file, the record and the problem."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluation_testdata as td  # noqa: E402

from rsdet.errors import ConfigError, DataError  # noqa: E402
from rsdet.evaluation import evaluate  # noqa: E402

GT = {"images": [{"id": 1, "width": 64, "height": 48}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 20],
                       "area": 400, "iscrowd": 0, "segmentation": td.box_polygon([4, 4, 20, 20])}],
      "categories": [{"id": 7, "name": "cat"}]}
GOOD = {"image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 18], "score": 0.9}


def _write(tmp_path, records, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))  # json writes NaN as NaN, as some tools do
    return path


@pytest.mark.parametrize("bad, expected", [
    ({"image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 18]}, "lacks ['score']"),
    ({**GOOD, "bbox": [4, 4, 20]}, "4 values"),
    ({**GOOD, "bbox": "4,4,20,18"}, "'bbox' must be a list"),
    ({**GOOD, "bbox": [4, 4, -1, 18]}, "negative width"),
    ({**GOOD, "bbox": [4, 4, float("nan"), 18]}, "non-finite"),
    ({**GOOD, "score": float("nan")}, "score nan"),
    ({**GOOD, "score": "high"}, "score 'high'"),
    ({**GOOD, "image_id": 999}, "image_id 999"),
    ({**GOOD, "image_id": "1"}, "image_id '1'"),
    ({**GOOD, "category_id": 3}, "category_id 3"),
    ([1, 7, 0.9], "is a list"),
])
def test_malformed_record_names_file_index_and_problem(tmp_path, bad, expected):
    path = _write(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(DataError) as err:
        evaluate(GT, path)
    msg = str(err.value)
    assert str(path) in msg and "record 2" in msg and expected in msg, msg


def test_segm_records(tmp_path):
    rle = td.rle_of(td.box_polygon([4, 4, 20, 18]), 48, 64)
    good = {**GOOD, "segmentation": rle}
    with pytest.raises(DataError, match=r"record 0 lacks \['segmentation'\]"):
        evaluate(GT, [GOOD], iou_type="segm")
    with pytest.raises(DataError, match=r"record 1: 'segmentation' RLE size \[10, 10\] differs"):
        evaluate(GT, [good, {**good, "segmentation": {"size": [10, 10], "counts": "0"}}],
                 iou_type="segm")
    with pytest.raises(DataError, match="record 0: 'segmentation' must be an RLE"):
        evaluate(GT, [{**good, "segmentation": 5}], iou_type="segm")
    # polygons and uncompressed RLE are converted to the compressed RLE pycocotools expects
    poly = {**good, "segmentation": td.box_polygon([4, 4, 20, 18])}
    assert evaluate(GT, [poly], iou_type="segm") == evaluate(GT, [good], iou_type="segm")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="Detections file .*nope.json does not exist"):
        evaluate(GT, tmp_path / "nope.json")
    with pytest.raises(DataError, match="Ground-truth file .*gt.json does not exist"):
        evaluate(tmp_path / "gt.json", [GOOD])
    bad = tmp_path / "broken.json"
    bad.write_text('[{"image_id": 1,')
    with pytest.raises(DataError, match="broken.json is not valid JSON"):
        evaluate(GT, bad)
    obj = _write(tmp_path, {"annotations": [GOOD]})
    with pytest.raises(DataError, match="must be a JSON list of records"):
        evaluate(GT, obj)


def test_malformed_ground_truth(tmp_path):
    with pytest.raises(DataError, match=r"lacks the COCO list\(s\) \['categories'\]"):
        evaluate({"images": [], "annotations": []}, [])
    broken = {**GT, "annotations": [{"id": 1, "image_id": 1, "category_id": 7}]}
    with pytest.raises(DataError, match=r"Ground truth <dict>: annotations\[0\] \(id 1\) lacks required key\(s\) \['bbox', 'area'\]"):
        evaluate(broken, [])
    with pytest.raises(DataError, match="protocol='coco'"):
        evaluate(GT, [GOOD], protocol="lvis")  # a COCO file has no federated lists


def test_bad_options():
    with pytest.raises(ConfigError, match="iou_type='mask'"):
        evaluate(GT, [GOOD], iou_type="mask")
    with pytest.raises(ConfigError, match="protocol='voc'"):
        evaluate(GT, [GOOD], protocol="voc")
    with pytest.raises(ConfigError, match="max_dets=0"):
        evaluate(GT, [GOOD], max_dets=0)


def test_numpy_scalars_are_accepted():
    import numpy as np

    rec = {"image_id": np.int64(1), "category_id": np.int32(7), "bbox": [4, 4, 20, 18],
           "score": np.float32(0.9)}
    assert evaluate(GT, [rec])["AP50"] == pytest.approx(1.0)


def test_mask_evaluation_checks_the_ground_truth_segmentations():
    """Mask AP reads every GT polygon: a 2-point polygon names its annotation instead of reaching
    pycocotools; box AP of the same file does not need the masks and works."""
    bad = json.loads(json.dumps(GT))
    bad["annotations"][0]["segmentation"] = [[4, 4, 24, 4]]
    segm = {**GOOD, "segmentation": td.box_polygon([4, 4, 20, 18])}
    with pytest.raises(DataError, match=r"annotations\[0\] \(id 1\)"):
        evaluate(bad, [segm], iou_type="segm")
    assert evaluate(bad, [GOOD], iou_type="bbox")["AP"] >= 0
