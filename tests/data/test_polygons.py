"""Mask → polygon tracing: exact round trip through pycocotools' rasteriser."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from rsdet.data.polygons import mask_to_polygons, polygon_signed_area

# pycocotools' decode trips numpy 2's `copy=False` deprecation on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _raster(poly, h, w):
    return mask_utils.decode(mask_utils.frPyObjects([poly], h, w))[:, :, 0].astype(bool)


@pytest.mark.parametrize("seed", range(5))
def test_outlines_and_holes_reproduce_random_masks_exactly(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 30, size=2))
        mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
        rebuilt = np.zeros((h, w), bool)
        for loop in mask_to_polygons(mask, keep_holes=True):
            rebuilt ^= _raster(loop, h, w)  # holes are nested inside their outline
        assert np.array_equal(rebuilt, mask)


def test_rectangle_has_four_corners_and_positive_area():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:7] = True
    (poly,) = mask_to_polygons(mask)
    assert len(poly) == 8
    assert sorted(zip(poly[0::2], poly[1::2])) == [(3, 2), (3, 5), (7, 2), (7, 5)]
    assert polygon_signed_area(poly) == 12


def test_holes_are_dropped_unless_asked_and_diagonal_pixels_split():
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    assert len(mask_to_polygons(ring)) == 1
    loops = mask_to_polygons(ring, keep_holes=True)
    assert sorted(polygon_signed_area(p) for p in loops) == [-1, 25]
    diagonal = np.array([[1, 0], [0, 1]], bool)
    assert len(mask_to_polygons(diagonal)) == 2
    assert mask_to_polygons(np.zeros((3, 3), bool)) == []
