"""Reading and checking COCO-format annotation files — one implementation for the training loader
(:mod:`rsdet.data.coco_dataset`) and the evaluator (:mod:`rsdet.evaluation.io`). No torch here.

Every problem is a :class:`rsdet.errors.DataError` naming the file (or ``source``), the section and
index of the first bad record (with its ``id`` when it has one) and what is wrong. The rules, also
in docs/evaluation.md ("Input checks"):

* the top level is an object with the lists ``images``, ``annotations`` and ``categories``;
* image and category ids are integers, each defined once; annotation ids (required for
  evaluation, optional for training) are integers and unique;
* an annotation names a defined image and category and has ``bbox`` = four finite numbers
  ``[x, y, width, height]`` with width, height >= 0 (a zero-size box is legal but degenerate: the
  training loader drops it with a warning, the evaluator keeps it as an unmatchable object);
* ``area`` (required for evaluation) is a finite number >= 0, ``iscrowd`` is 0/1, image ``width``
  and ``height`` (when given) are finite and positive;
* the LVIS protocol also needs each image's ``neg_category_ids`` / ``not_exhaustive_category_ids``
  and each category's ``frequency`` in r/c/f;
* with ``check_masks`` (the training loader with ``dataset.with_masks=true``), a ``segmentation``, when
  present, is well formed: polygons are lists of >= 3 finite points (an even number of coordinates,
  at least 6) within one image size of the image, RLE is ``{"size": [height, width], "counts": ...}`` whose size is the image's and whose
  run lengths (a list of non-negative integers, or COCO's compressed string) add up to height × width
  (pycocotools decodes without bounds checks, so a bad RLE would otherwise corrupt memory or crash).
"""

from __future__ import annotations

import json
import math
import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from rsdet.errors import DataError

SECTIONS = ("images", "annotations", "categories")
_LVIS_IMAGE_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")


def read_json(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """``json.load`` of ``path`` with DataErrors naming it; ``what`` says which file ("Detections")."""
    path = Path(path)
    fix = f"; {hint}" if hint else ""
    if not path.is_file():
        state = "is a folder, expected a .json file" if path.is_dir() else "does not exist"
        raise DataError(f"{what} file {path} {state}{fix}")
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise DataError(f"{what} file {path} is not valid JSON: {err.msg} at line {err.lineno}, column "
                        f"{err.colno} (truncated or hand-edited?); re-download or re-export it{fix}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{what} file {path} is not UTF-8 JSON text ({err}){fix}") from err
    except (ValueError, RecursionError) as err:  # e.g. an integer literal with thousands of digits
        raise DataError(f"{what} file {path} cannot be parsed as JSON ({type(err).__name__}: "
                        f"{str(err)[:200]}){fix}") from err
    except OSError as err:
        raise DataError(f"{what} file {path} cannot be read ({err}){fix}") from err


def is_id(x: Any) -> bool:
    """An integer id (Python or numpy integer; not a bool)."""
    return isinstance(x, Integral) and not isinstance(x, bool)


def is_finite(x: Any) -> bool:
    """A finite real number (not a bool, not a string)."""
    if not isinstance(x, Real) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def box_problem(box: Any) -> str | None:
    """What is wrong with a COCO ``[x, y, width, height]`` box, or None: four finite numbers, width and
    height >= 0, and a finite far corner and area (so no evaluator sums or multiplies into inf/NaN)."""
    if not isinstance(box, (list, tuple)):
        return f"'bbox' must be a list [x, y, width, height], got a {type(box).__name__}"
    if len(box) != 4:
        return f"'bbox' must have 4 values [x, y, width, height], got {len(box)}"
    if not all(is_finite(v) for v in box):
        return f"'bbox' {list(box)} has a non-finite or non-numeric value"
    x, y, w, h = (float(v) for v in box)
    if w < 0 or h < 0:
        return (f"'bbox' {list(box)} has a negative width or height (COCO boxes are [x, y, width, height], "
                "not corners)")
    if not all(math.isfinite(v) for v in (x + w, y + h, w * h)):
        return f"'bbox' {list(box)} is too large: its far corner or area overflows"
    return None


def rle_string_counts(counts: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string, or None when the string is malformed.

    The format (pycocotools' ``rleToString``): each run length is written as signed 5-bit groups,
    least significant first, one character ``chr(48 + group)`` per group, bit 0x20 set while more
    groups follow and bit 0x10 of the last group the sign; from the fourth run on, the value stored
    is the difference to the run two places earlier.
    """
    runs: list[int] = []
    value, shift, more = 0, 0, False
    for ch in counts:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            return None
        value |= (c & 0x1F) << shift
        shift += 5
        more = bool(c & 0x20)
        if more:
            continue
        if c & 0x10:  # sign-extend
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    return None if more else runs


def segmentation_problem(seg: Any, height: Any = None, width: Any = None) -> str | None:
    """What is wrong with a COCO ``segmentation`` (polygons or RLE) of an image of ``height`` x
    ``width`` pixels (None = unknown: the RLE size is then only checked for consistency), or None."""
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list):
                return f"polygon {k} is a {type(poly).__name__}, expected a flat list [x0, y0, x1, y1, ...]"
            if len(poly) % 2:
                return (f"polygon {k} has {len(poly)} coordinates, an odd count (polygons are flat "
                        "[x0, y0, x1, y1, ...] lists)")
            if len(poly) < 6:
                return f"polygon {k} has {len(poly) // 2} point(s); a polygon needs at least 3"
            # Fast path (LVIS has millions of polygons): a finite sum means numbers, none inf or NaN.
            try:
                numeric = math.isfinite(sum(poly))
            except (TypeError, OverflowError):
                numeric = False
            if not numeric and not all(is_finite(v) for v in poly):
                return f"polygon {k} has a non-finite or non-numeric coordinate"
            if height is not None and width is not None:
                # pycocotools walks the outline pixel by pixel: a far-away vertex costs memory and time.
                xs, ys = poly[0::2], poly[1::2]
                if not (-width <= min(xs) and max(xs) <= 2 * width and -height <= min(ys) and max(ys) <= 2 * height):
                    return (f"polygon {k} has a vertex far outside the {width}x{height} image (x in "
                            f"[{min(xs)}, {max(xs)}], y in [{min(ys)}, {max(ys)}]); coordinates are pixels")
        return None
    if not isinstance(seg, dict):
        return f"must be a list of polygons or an RLE object, got a {type(seg).__name__}"
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(is_id(v) and v > 0 for v in size)):
        return f"RLE needs 'size' [height, width] of two positive integers, got {size!r}"
    h, w = (int(v) for v in size)
    if height is not None and width is not None and [h, w] != [height, width]:
        return (f"RLE size [{h}, {w}] (height, width) differs from the image's [{height}, {width}]; the mask "
                "belongs to another image or is transposed")
    if isinstance(counts, str):
        runs = rle_string_counts(counts)
        if runs is None:
            return "RLE 'counts' is not a valid compressed RLE string (bad character or cut off)"
        kind = "compressed RLE"
    elif isinstance(counts, list):
        if not all(is_id(v) for v in counts):
            return "RLE 'counts' must be a list of integers (uncompressed RLE) or a string (compressed RLE)"
        runs, kind = counts, "uncompressed RLE"
    else:
        return f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"
    if any(v < 0 for v in runs):
        return f"{kind} has a negative run length"
    total = sum(runs)
    if total != h * w:
        return f"{kind} run lengths add up to {total} pixels, but size [{h}, {w}] has {h * w}"
    return None


def _rec(section: str, i: int, item: Any) -> str:
    ident = item.get("id") if isinstance(item, dict) else None
    return f"{section}[{i}]" + (f" (id {ident!r})" if ident is not None else "")


def check_annotations(data: Any, source: str, *, protocol: str | None = None, for_evaluation: bool = False,
                      need_file_name: bool = False, check_masks: bool = False, hint: str = "") -> dict:
    """Check a loaded COCO-format annotation dict (see the module docstring); return it unchanged.

    ``source`` prefixes every message ("annotation file x.json"); ``protocol="lvis"`` adds the
    federated-list checks; ``for_evaluation`` requires annotation ``id`` and ``area``;
    ``need_file_name`` requires each image to have ``file_name`` or ``coco_url`` (to load pixels);
    ``check_masks`` checks every ``segmentation`` present (:func:`segmentation_problem`).
    """
    fix = f"; {hint}" if hint else ""
    if not isinstance(data, dict):
        raise DataError(f"{source}: the top level must be a JSON object with 'images', 'annotations' and "
                        f"'categories', got a {type(data).__name__}{fix}")
    missing = [k for k in SECTIONS if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{source} lacks the COCO list(s) {missing}; an instances file needs 'images', "
                        f"'annotations' and 'categories' (image_info_test files without annotations cannot "
                        f"be used for training or evaluation){fix}")

    def bad(section: str, i: int, item: Any, problem: str) -> DataError:
        return DataError(f"{source}: {_rec(section, i, item)} {problem}{fix}")

    images: dict = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise bad("images", i, img, f"is a {type(img).__name__}, expected an object")
        if not is_id(img.get("id")):
            raise bad("images", i, img, "needs an integer 'id'")
        if img["id"] in images:
            raise bad("images", i, img, "lists an image id more than once")
        for key in ("width", "height"):
            if key in img and not (is_finite(img[key]) and img[key] > 0):
                raise bad("images", i, img, f"has {key} {img[key]!r}, expected a positive number of pixels")
        if need_file_name:
            if "file_name" not in img and "coco_url" not in img:
                raise bad("images", i, img, "has neither 'file_name' nor 'coco_url'")
            key = "file_name" if "file_name" in img else "coco_url"
            if not (isinstance(img[key], str) and img[key].strip("/")):
                raise bad("images", i, img, f"has {key} {img[key]!r}, expected a non-empty path string")
        if protocol == "lvis":
            lacking = [k for k in _LVIS_IMAGE_KEYS if not isinstance(img.get(k), list)]
            if lacking:
                raise bad("images", i, img, f"lacks the list(s) {lacking}, which the LVIS protocol needs; is "
                                            "this a COCO file? Use protocol='coco'")
        images[img["id"]] = img

    categories: set = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict):
            raise bad("categories", i, cat, f"is a {type(cat).__name__}, expected an object")
        if not is_id(cat.get("id")):
            raise bad("categories", i, cat, "needs an integer 'id'")
        if cat["id"] in categories:
            raise bad("categories", i, cat, "repeats a category id defined earlier")
        if protocol == "lvis" and cat.get("frequency") not in ("r", "c", "f"):
            raise bad("categories", i, cat, "has no 'frequency' in r/c/f, which the LVIS protocol needs for "
                                            "APr/APc/APf")
        categories.add(cat["id"])

    required = ("id", "image_id", "category_id", "bbox", "area") if for_evaluation else (
        "image_id", "category_id", "bbox")
    ann_ids: set = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise bad("annotations", i, ann, f"is a {type(ann).__name__}, expected an object")
        lacking = [k for k in required if k not in ann]
        if lacking:
            raise bad("annotations", i, ann, f"lacks required key(s) {lacking}")
        if "id" in ann:
            if not is_id(ann["id"]):
                raise bad("annotations", i, ann, "needs an integer 'id'")
            if ann["id"] in ann_ids:
                raise bad("annotations", i, ann, "repeats an annotation id used earlier (the evaluators "
                                                 "index annotations by id)")
            ann_ids.add(ann["id"])
        if not (is_id(ann["image_id"]) and ann["image_id"] in images):
            raise bad("annotations", i, ann, f"refers to image_id {ann['image_id']!r}, which is not in 'images'")
        if not (is_id(ann["category_id"]) and ann["category_id"] in categories):
            shown = sorted(categories)[:10]
            raise bad("annotations", i, ann, f"has category_id {ann['category_id']!r}, which is not defined in "
                                             f"'categories' (defined: {shown}{'...' if len(categories) > 10 else ''})")
        problem = box_problem(ann["bbox"])
        if problem:
            raise bad("annotations", i, ann, f"is malformed: {problem}")
        if "area" in ann and not (is_finite(ann["area"]) and ann["area"] >= 0):
            raise bad("annotations", i, ann, f"has area {ann['area']!r}, expected a finite number >= 0")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):  # True/False compare equal to 1/0
            raise bad("annotations", i, ann, f"has iscrowd {ann['iscrowd']!r}, expected 0 or 1")
        if check_masks and "segmentation" in ann:
            img = images[ann["image_id"]]
            problem = segmentation_problem(ann["segmentation"], img.get("height"), img.get("width"))
            if problem:
                raise bad("annotations", i, ann, f"has a malformed 'segmentation': {problem}")
    return data
