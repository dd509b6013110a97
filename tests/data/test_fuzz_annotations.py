"""Fuzzed COCO-format annotation files through the training loader (CocoDetectionDataset): every
outcome is either the right targets or a DataError naming the file and the offending record."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corruptions import corruption, fuzz_settings, write  # noqa: E402

from rsdet.data.coco_dataset import CocoDetectionDataset  # noqa: E402
from rsdet.errors import DataError, RsdetError  # noqa: E402

W, H = 40, 30
BASE = {
    "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
               {"id": 2, "file_name": "b.png", "width": W, "height": H},
               {"id": 5, "file_name": "c.png", "width": W, "height": H}],
    "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 9, "bbox": [30.5, 20, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 12, "image_id": 2, "category_id": 9, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
        {"id": 13, "image_id": 5, "category_id": 3, "bbox": [4, 4, 0, 6], "area": 0, "iscrowd": 0},
        {"id": 14, "image_id": 5, "category_id": 9, "bbox": [1, 2, 3, 4], "area": 12},
    ],
}
RECORD = re.compile(r"(images|annotations|categories)\[\d+\]")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    logging.getLogger("rsdet.data.coco_dataset").setLevel(logging.ERROR)  # the degenerate-box warning
    root = tmp_path_factory.mktemp("fuzz-ann")
    (root / "images").mkdir()
    for k, name in enumerate(("a.png", "b.png", "c.png")):
        Image.fromarray(np.full((H, W, 3), 40 * k, dtype=np.uint8)).save(root / "images" / name)
    return root


def expected_targets(doc: dict) -> dict:
    """The loader's contract, written out plainly: non-crowd boxes clipped to the image, labels by
    sorted category id, boxes with nothing left inside the image dropped."""
    label = {cid: i for i, cid in enumerate(sorted(c["id"] for c in doc["categories"]))}
    images = {img["id"]: img for img in doc["images"]}
    out: dict = {img["id"]: [] for img in doc["images"]}
    for ann in doc["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        img = images[ann["image_id"]]
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1, x2, y2 = x, y, x + w, y + h
        if "width" in img and "height" in img:
            x1, x2 = (min(max(v, 0.0), img["width"]) for v in (x1, x2))
            y1, y2 = (min(max(v, 0.0), img["height"]) for v in (y1, y2))
        if x2 > x1 and y2 > y1:
            out[ann["image_id"]].append(([x1, y1, x2, y2], label[ann["category_id"]]))
    return out


def test_the_uncorrupted_file_loads_as_expected(folder):
    ann = folder / "base.json"
    ann.write_text(json.dumps(BASE))
    ds = CocoDetectionDataset(folder / "images", ann)
    assert ds.stats["boxes"] == 3 and ds.stats["crowd_boxes"] == 1 and ds.stats["dropped_degenerate_boxes"] == 1
    assert expected_targets(BASE)[1][1] == ([30.5, 20.0, 40.0, 30.0], 1)


@fuzz_settings(300)
@given(data=st.data())
def test_fuzzed_annotation_file(folder, data):
    kind, text, path = data.draw(corruption(BASE))
    ann = folder / "instances.json"
    write(ann, text)
    try:
        ds = CocoDetectionDataset(folder / "images", ann, config_key="dataset.train")
        items = [ds[i] for i in range(len(ds))]
    except RsdetError as err:
        msg = str(err)
        assert isinstance(err, DataError), msg
        assert str(ann) in msg, msg  # names the file
        if len(path) >= 2:  # a record was corrupted: the message points at a record (or its image file)
            assert RECORD.search(msg) or re.search(r"image file .* image id", msg), msg
        return
    want = expected_targets(json.loads(text))
    assert [t["image_id"] for _, t in items] == ds.image_ids == list(want)
    for image, target in items:
        boxes = want[target["image_id"]]
        assert target["labels"].tolist() == [b[1] for b in boxes]
        assert np.allclose(target["boxes"].numpy(), np.asarray([b[0] for b in boxes], np.float32).reshape(-1, 4))
        assert bool(np.isfinite(target["boxes"].numpy()).all())
        assert tuple(image.shape[1:]) == target["orig_size"] == (H, W)


# The same file with masks: polygons, a compressed RLE, an uncompressed (crowd) RLE. pycocotools does
# not bounds-check its decoder, so a corrupted mask that slipped through could crash the process.
MASKED = json.loads(json.dumps(BASE))
_masks = {
    10: [[2, 3, 12, 3, 12, 11, 2, 11]],
    11: [[30.5, 20, 40, 20, 40, 30, 30.5, 30], [31, 21, 33, 21, 32, 24]],
    12: {"size": [H, W], "counts": [0, 5, 25, 5, 25, 5, 25, 5, 25, 5, 1075]},
    14: {"size": [H, W], "counts": "P14j0000fQ1"},
}
for _ann in MASKED["annotations"]:
    if _ann["id"] in _masks:
        _ann["segmentation"] = _masks[_ann["id"]]


def test_the_uncorrupted_masked_file_loads_as_expected(folder):
    ann = folder / "masked.json"
    ann.write_text(json.dumps(MASKED))
    ds = CocoDetectionDataset(folder / "images", ann, with_masks=True)
    masks = ds[0][1]["masks"]
    assert masks.shape == (2, H, W) and masks[0].sum() == 80 and masks[1].sum() == 90
    assert ds.stats["masks_from_boxes"] == 0 and ds[2][1]["masks"][0].sum() == 12  # the compressed RLE


@fuzz_settings(150)
@given(data=st.data())
def test_fuzzed_masks(folder, data):
    kind, text, path = data.draw(corruption(MASKED))
    ann = folder / "masked_fuzz.json"
    write(ann, text)
    try:
        ds = CocoDetectionDataset(folder / "images", ann, with_masks=True, config_key="dataset.train")
        items = [ds[i] for i in range(len(ds))]
    except RsdetError as err:
        msg = str(err)
        assert isinstance(err, DataError), msg
        assert str(ann) in msg, msg
        if len(path) >= 2:
            assert RECORD.search(msg) or re.search(r"image file .* image id|annotation id", msg), msg
        return
    want = expected_targets(json.loads(text))
    for _, target in items:
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (len(want[target["image_id"]]), H, W)
        assert masks.numel() == 0 or int(masks.max()) <= 1
