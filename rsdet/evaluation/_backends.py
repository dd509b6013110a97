"""Thin, quiet access to the official evaluators: pycocotools' COCOeval and the `lvis` package.

Two things live here so that nothing else in rsdet has to know about them:

* the numpy-2 shim for ``lvis`` 0.5.3, whose ``accumulate`` still calls ``np.float`` (removed in
  numpy 1.24). We add back only the aliases that are missing, right before the first import of
  ``lvis``, instead of asking users to pin an old numpy;
* silencing: pycocotools prints progress to stdout and ``lvis`` logs warnings (and calls
  ``logging.basicConfig`` when imported), which would drown the CLI's table. ``quiet()`` swallows
  both unless the caller asked for ``verbose``.

The evaluators are used unmodified; helpers here only build their input objects from dicts
that rsdet has already validated.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from typing import Any, Iterator

import numpy as np
from pycocotools.coco import COCO

# numpy aliases removed in 1.24 that lvis 0.5.3 uses (``np.float`` in LVISEval.accumulate).
_REMOVED_NUMPY_ALIASES = {"float": float, "int": int}


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Swallow the evaluators' stdout chatter, lvis log records and their deprecation warnings."""
    if verbose:
        yield
        return
    lvis_logger = logging.getLogger("lvis")
    old_level = lvis_logger.level
    lvis_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # lvis calls the deprecated Logger.warn; numpy may warn on empty means.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        lvis_logger.setLevel(old_level)


def import_lvis() -> Any:
    """Import the ``lvis`` package under numpy 2 without side effects on the root logger."""
    for name, value in _REMOVED_NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import lvis  # noqa: PLC0415 - lazy on purpose: pulls in cv2 and matplotlib
    finally:
        # lvis/__init__.py calls logging.basicConfig(); undo it so rsdet's logging stays ours.
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return lvis


def coco_gt(dataset: dict) -> COCO:
    """A pycocotools ``COCO`` index over an already-loaded annotation dict."""
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def coco_results(gt: COCO, detections: list[dict]) -> COCO:
    """``COCO.loadRes`` for a list of detections, including the empty list it cannot handle."""
    if detections:
        return gt.loadRes(detections)
    # loadRes reads detections[0] to guess the result type; an empty run has no detections at all.
    res = COCO()
    res.dataset["images"] = list(gt.dataset["images"])
    res.dataset["categories"] = copy.deepcopy(gt.dataset["categories"])
    res.dataset["annotations"] = []
    res.createIndex()
    return res


def lvis_gt(dataset: dict) -> Any:
    """An ``lvis.LVIS`` index over an already-loaded dict (its constructor only takes a path)."""
    lvis = import_lvis()
    gt = lvis.LVIS.__new__(lvis.LVIS)
    gt.logger = logging.getLogger("lvis.lvis")
    gt.dataset = dataset
    gt._create_index()
    return gt


def lvis_results(dataset: dict, detections: list[dict], max_dets: int) -> Any:
    """``lvis.LVISResults`` (per-image top-``max_dets`` cut included), also for zero detections."""
    lvis = import_lvis()
    # LVISResults deep-copies its ground truth to reuse images/categories; hand it a copy without
    # the annotations, which it replaces anyway, so large ground truths are not copied for nothing.
    header = lvis_gt({"images": dataset["images"], "categories": dataset["categories"],
                      "annotations": []})
    if detections:
        return lvis.LVISResults(header, detections, max_dets=max_dets)
    res = lvis.LVISResults.__new__(lvis.LVISResults)
    res.logger = logging.getLogger("lvis.results")
    res.dataset = copy.deepcopy(header.dataset)
    res._create_index()
    return res
