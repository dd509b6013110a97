"""rsdet.data.masks: polygons, compressed and uncompressed (crowd) RLE decoded to the right pixels."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from rsdet.data.masks import decode_segmentation, has_segmentation, instance_masks
from rsdet.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 30, 40


def test_polygon_covers_the_pixels_inside_its_corners():
    # Corners on pixel corners: pixels x = 1..3, y = 1..2 (pixel (x, y) covers [x, x+1) x [y, y+1)).
    mask = decode_segmentation([[1, 1, 4, 1, 4, 3, 1, 3]], H, W)
    assert mask.dtype == np.uint8 and mask.shape == (H, W)
    expected = np.zeros((H, W), np.uint8)
    expected[1:3, 1:4] = 1
    assert np.array_equal(mask, expected)
    # Two polygons of one object are united.
    both = decode_segmentation([[1, 1, 4, 1, 4, 3, 1, 3], [10, 10, 12, 10, 12, 12, 10, 12]], H, W)
    assert both.sum() == 6 + 4 and both[10:12, 10:12].all()


def test_crowd_style_uncompressed_rle_is_column_major():
    # COCO crowd regions: counts alternate background/foreground runs down the columns. 600 zeros
    # fill columns 0..19 (30 rows each), then 600 ones fill columns 20..39.
    mask = decode_segmentation({"size": [H, W], "counts": [600, 600]}, H, W)
    assert mask[:, :20].sum() == 0 and mask[:, 20:].all()
    starts_on = decode_segmentation({"size": [H, W], "counts": [0, 45, 1155]}, H, W)
    assert starts_on[:, 0].all() and starts_on[:15, 1].all() and starts_on.sum() == 45


def test_compressed_and_uncompressed_rle_round_trip():
    rng = np.random.default_rng(3)
    truth = (rng.random((H, W)) < 0.3).astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(truth))
    compressed = {"size": [H, W], "counts": rle["counts"].decode("ascii")}  # as stored in JSON
    assert np.array_equal(decode_segmentation(compressed, H, W), truth)
    flat = truth.ravel(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))
    runs = np.diff(np.concatenate([[0], edges])).tolist()
    assert np.array_equal(decode_segmentation({"size": [H, W], "counts": runs}, H, W), truth)


def test_instance_masks_fall_back_to_boxes_and_check_rle_size_against_the_pixels():
    anns = [
        {"id": 1, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
        {"id": 2},  # no segmentation: the box becomes the mask
        {"id": 3, "segmentation": []},
    ]
    boxes = [[1, 1, 4, 3], [5.2, 6, 9.6, 8], [0, 0, 2, 2]]
    masks = instance_masks(anns, boxes, H, W)
    assert masks.shape == (3, H, W) and masks.dtype == np.uint8
    assert masks[0].sum() == 6 and masks[1].sum() == (10 - 5) * (8 - 6) and masks[1, 6:8, 5:10].all()
    assert masks[2].sum() == 4
    assert not has_segmentation(anns[1]) and not has_segmentation(anns[2]) and has_segmentation(anns[0])
    assert instance_masks([], [], H, W).shape == (0, H, W)
    wrong = [{"id": 77, "image_id": 5, "segmentation": {"size": [W, H], "counts": [H * W]}}]
    with pytest.raises(DataError, match=r"x\.json: annotation id 77 \(image id 5\) .*RLE size \[40, 30\]"):
        instance_masks(wrong, [[0, 0, 1, 1]], H, W, source="x.json")
    far = [{"id": 78, "image_id": 5, "segmentation": [[1, 1, 5, 1, 5, 1e9]]}]
    with pytest.raises(DataError, match=r"annotation id 78 .*vertex far outside the 40x30 image"):
        instance_masks(far, [[0, 0, 1, 1]], H, W, source="x.json")
