"""Fuzzed results files (and ground-truth files) through rsdet.evaluation.evaluate: every outcome is
either exactly what pycocotools' COCOeval computes on the same input, or a DataError naming the file
and the offending record."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corruptions import corruption, fuzz_settings, write  # noqa: E402

from rsdet.errors import DataError, RsdetError  # noqa: E402
from rsdet.evaluation import evaluate  # noqa: E402
from rsdet.evaluation.evaluator import COCO_AP_KEYS  # noqa: E402

GT = {
    "images": [{"id": 1, "width": 64, "height": 48}, {"id": 2, "width": 64, "height": 48}],
    "categories": [{"id": 7, "name": "cat"}, {"id": 8, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 8, "bbox": [30, 10, 24, 30], "area": 720, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 8, "bbox": [50, 5, 6, 6], "area": 36, "iscrowd": 1},
    ],
}
DETS = [
    {"image_id": 1, "category_id": 7, "bbox": [5, 4, 19, 21], "score": 0.9},
    {"image_id": 1, "category_id": 8, "bbox": [28, 12, 24, 30], "score": 0.6},
    {"image_id": 1, "category_id": 7, "bbox": [40, 30, 10, 10], "score": 0.5},
    {"image_id": 2, "category_id": 7, "bbox": [2, 1, 36, 40], "score": 0.8},
    {"image_id": 2, "category_id": 8, "bbox": [50, 5, 6, 6], "score": 0.3},
]
SETTINGS = fuzz_settings(150)


def reference(gt: dict, dets: list) -> dict:
    """pycocotools on the same (parsed) input, as its README shows."""
    gt = copy.deepcopy(gt)
    for ann in gt["annotations"]:
        ann.setdefault("iscrowd", 0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(COCO_AP_KEYS, map(float, ev.stats)))


def _check(result: dict, gt: dict, dets: list) -> None:
    if not dets:  # pycocotools' loadRes cannot take an empty list; rsdet's answer is "nothing found"
        assert all(result[k] in (0.0, -1.0) for k in COCO_AP_KEYS), result
    else:
        ref = reference(gt, dets)
        for key in COCO_AP_KEYS:
            assert result[key] == pytest.approx(ref[key], abs=1e-12), key
    assert all(isinstance(v, float) and math.isfinite(v) and -1 <= v <= 1 for v in result.values()), result


def test_the_uncorrupted_files_match_pycocotools():
    result = evaluate(copy.deepcopy(GT), copy.deepcopy(DETS))
    assert 0.3 < result["AP"] < 1
    _check(result, GT, DETS)


@SETTINGS
@given(data=st.data())
def test_fuzzed_results_file(tmp_path, data):
    kind, text, path = data.draw(corruption(DETS))
    results = tmp_path / "results.json"
    write(results, text)
    try:
        result = evaluate(copy.deepcopy(GT), results)
    except RsdetError as err:
        msg = str(err)
        assert isinstance(err, DataError) and str(results) in msg, msg
        if len(path) >= 2:  # a record was corrupted: the message names a record by index
            assert re.search(r"record \d+", msg), msg
        return
    _check(result, GT, json.loads(text))


@SETTINGS
@given(data=st.data())
def test_fuzzed_ground_truth_file(tmp_path, data):
    kind, text, path = data.draw(corruption(GT))
    gt_file = tmp_path / "gt.json"
    write(gt_file, text)
    try:
        result = evaluate(gt_file, copy.deepcopy(DETS))
    except RsdetError as err:
        msg = str(err)
        assert isinstance(err, DataError) and str(gt_file) in msg, msg
        if len(path) >= 2:
            assert re.search(r"(images|annotations|categories)\[\d+\]|record \d+", msg), msg
        return
    _check(result, json.loads(text), DETS)
