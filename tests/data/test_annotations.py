"""The segmentation checks of rsdet.data.annotations: COCO's compressed RLE strings and the rules a
polygon / RLE mask must follow before pycocotools (which does not bounds-check) may decode it."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from rsdet.data.annotations import rle_string_counts, segmentation_problem

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a mask in column-major order, starting with a (possibly empty) run of zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))  # a change, and the end
    return np.diff(np.concatenate([[0], edges])).tolist()


def test_compressed_rle_strings_decode_to_pycocotools_run_lengths():
    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(1, 50, size=2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if trial % 7 == 0:
            mask[:] = trial % 2  # all background / all foreground: one or two runs
        counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
        assert rle_string_counts(counts) == _runs(mask)


def test_a_hand_encoded_string():
    # runs 3, 40, 2: '3' is 3; 40 = 0b01000_01000 → groups 8 (with continuation: 8|0x20=40 → 'X') and 1 ('1');
    # the third run is stored as is (differences start at the fourth): '2'.
    assert rle_string_counts("3X12") == [3, 40, 2]
    assert rle_string_counts("") == []
    assert rle_string_counts("X") is None  # continuation bit set on the last character: cut off
    assert rle_string_counts("3 ") is None  # a character outside '0'..'o'


@pytest.mark.parametrize(
    "seg, problem",
    [
        ([[1, 1, 5, 1]], "polygon 0 has 2 point(s); a polygon needs at least 3"),
        ([[1, 1, 5, 1, 5, 5], [1, 1, 5, 1, 5]], "polygon 1 has 5 coordinates, an odd count"),
        ([[1, 1, 5, "a", 5, 5]], "polygon 0 has a non-finite or non-numeric coordinate"),
        ([[1, 1, 5, float("nan"), 5, 5]], "non-finite"),
        ([{"size": [3, 4]}], "polygon 0 is a dict"),
        ([[1, 1, 5, 1, 5, 1e30]], "polygon 0 has a vertex far outside the 4x3 image"),
        ([[-5, 1, 5, 1, 5, 2]], "far outside"),
        ("abc", "must be a list of polygons or an RLE object, got a str"),
        ({"counts": "3X12"}, "RLE needs 'size' [height, width]"),
        ({"size": [0, 4], "counts": []}, "two positive integers"),
        ({"size": [4, 3], "counts": [12]}, "RLE size [4, 3] (height, width) differs from the image's [3, 4]"),
        ({"size": [3, 4], "counts": [5, 6]}, "uncompressed RLE run lengths add up to 11 pixels, but size [3, 4] has 12"),
        ({"size": [3, 4], "counts": [5, -1, 8]}, "uncompressed RLE has a negative run length"),
        ({"size": [3, 4], "counts": [5, 2.5, 4.5]}, "must be a list of integers"),
        ({"size": [3, 4], "counts": "3X"}, "not a valid compressed RLE string"),
        ({"size": [3, 4], "counts": "3X12"}, "compressed RLE run lengths add up to 45 pixels"),
        ({"size": [3, 4], "counts": None}, "must be a string or a list of integers, got NoneType"),
    ],
)
def test_malformed_segmentations_are_described(seg, problem):
    assert problem in segmentation_problem(seg, 3, 4)


def test_well_formed_segmentations_pass():
    assert segmentation_problem([[1, 1, 5, 1, 5, 5]], 3, 4) is None
    assert segmentation_problem([], 3, 4) is None  # no mask at all: the loader falls back to the box
    assert segmentation_problem({"size": [3, 4], "counts": [0, 12]}, 3, 4) is None
    counts = mask_utils.encode(np.asfortranarray(np.eye(3, 4, dtype=np.uint8)))["counts"].decode()
    assert segmentation_problem({"size": [3, 4], "counts": counts}, 3, 4) is None
    assert segmentation_problem({"size": [5, 7], "counts": [35]}) is None  # image size unknown: self-consistent
    assert segmentation_problem([[-4, -3, 8, 6, 0, 6]], 3, 4) is None  # up to one image size outside
    assert segmentation_problem([[1e30, 1, 5, 1, 5, 2]]) is None  # image size unknown: checked when decoding
