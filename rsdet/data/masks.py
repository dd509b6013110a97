"""Instance masks from COCO ``segmentation`` fields (polygons, compressed or uncompressed RLE).

Decoding happens per image, in the dataset's ``__getitem__``: a mask costs height × width bytes, so
a whole LVIS split decoded up front would not fit in memory. The input was checked when the
annotation file was loaded (:func:`rsdet.data.annotations.segmentation_problem`, with
``check_masks``); what could only be checked against the pixels (the RLE size and polygon extent of
an image whose record has no width/height) is checked again here, against the decoded image's size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from rsdet.data.annotations import segmentation_problem
from rsdet.errors import DataError

__all__ = ["decode_segmentation", "has_segmentation", "instance_masks"]


def has_segmentation(ann: dict) -> bool:
    """Whether ``ann`` carries a mask: a non-empty polygon list or an RLE object."""
    seg = ann.get("segmentation")
    return isinstance(seg, dict) or (isinstance(seg, list) and len(seg) > 0)


def decode_segmentation(seg: list | dict, height: int, width: int) -> np.ndarray:
    """A checked ``segmentation`` as a uint8 ``[height, width]`` mask (1 inside).

    Polygons are rasterised by pycocotools (pixel (x, y) covers [x, x+1) × [y, y+1); several polygons
    of one object are united); uncompressed RLE (``counts`` a list, as COCO's crowd regions) is
    compressed first; compressed RLE (``counts`` a string) is decoded as is.
    """
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": list(seg["size"]), "counts": seg["counts"].encode("ascii")}
    with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's copy=False deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def instance_masks(anns: Sequence[dict], boxes: Sequence[Sequence[float]], height: int, width: int, *,
                   source: str | Path = "annotation file") -> np.ndarray:
    """uint8 ``[n, height, width]`` masks of ``anns``, row k aligned with ``boxes[k]`` (x1, y1, x2, y2).

    An annotation without a segmentation (no key, or an empty polygon list) gets its box filled, so
    a mask head always has a target; the dataset counts these in ``stats['masks_from_boxes']``.
    ``source`` names the annotation file in errors.
    """
    out = np.zeros((len(anns), height, width), dtype=np.uint8)
    for k, (ann, box) in enumerate(zip(anns, boxes)):
        if not has_segmentation(ann):
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            out[k, max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 1
            continue
        seg = ann["segmentation"]
        # Files whose image records lack width/height could only be checked for consistency on load.
        problem = segmentation_problem(seg, height, width)
        if problem:
            raise DataError(f"{source}: annotation id {ann.get('id')!r} (image id {ann.get('image_id')!r}) has a "
                            f"malformed 'segmentation': {problem}")
        out[k] = decode_segmentation(seg, height, width)
    return out
