"""The fast evaluation backend: the official COCO/LVIS numbers from one vectorised matching.

``eval.backend=fast`` (and ``auto``) evaluates with this module instead of pycocotools' COCOeval or
the ``lvis`` package's LVISEval, which stay the reference (``eval.backend=official``). It follows
their rules step for step — the same inputs (:mod:`rsdet.evaluation._fast_inputs`), the same greedy
matching (:mod:`rsdet.evaluation._fast_match`), the same accumulation into arrays of the same shape
and the same means over them (:mod:`rsdet.evaluation._fast_accumulate`) — so that every number
equals the official one, not merely approximates it; docs/evaluation.md ("The fast path") gives the
argument and the tests in tests/evaluation/test_fast*.py check it, bit for bit.

What makes it fast: no Python loop over (image, category, area range) records, IoU only where an
(image, category) has both detections and ground truth, one matching step per detection rank for
all groups, area ranges and IoU thresholds at once, and for a score-threshold sweep one matching for
every threshold (:meth:`FastEvaluation.summary` with ``score_threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsdet.evaluation._fast_accumulate import accumulate, coco_stats, label, lvis_results
from rsdet.evaluation._fast_inputs import prepare
from rsdet.evaluation.lrp import ClassLRP

_FREQUENCIES = ("r", "c", "f")


@dataclass
class Summary:
    """One evaluation: ``stats`` (COCO: the 12 ``COCOeval.stats``; LVIS: ``LVISEval.results`` with
    ``AR``/``ARs``/... for ``AR@N``/``ARs@N``/...), the precision array at area "all" and the
    last max-detections cut (T, R, K) of the categories with ground truth, the category ids of its
    K axis, and oLRP per category."""

    stats: list[float] | dict[str, float]
    precision: np.ndarray
    cat_ids: list[int]
    lrp: dict[int, ClassLRP]


class FastEvaluation:
    """Match once; summarise at any test score threshold.

    Args:
        dataset: ground truth checked by :func:`rsdet.evaluation.io.load_ground_truth` (not modified).
        dets: detection records checked by :func:`rsdet.evaluation.io.validate_detections`.
        iou_type, protocol, max_dets: as :func:`rsdet.evaluation.evaluate`.
    """

    def __init__(self, dataset: dict, dets: list[dict], iou_type: str, protocol: str, max_dets: int):
        self.protocol = protocol
        self.matched = label(prepare(dataset, dets, iou_type, protocol, max_dets))
        self.cat_ids = list(self.matched.inp.cat_ids)
        if protocol == "lvis":
            freq = {c["id"]: c["frequency"] for c in dataset["categories"]}
            self.freq_groups = [[i for i, c in enumerate(self.cat_ids) if freq[c] == f]
                                for f in _FREQUENCIES]

    def summary(self, score_threshold: float | None = None) -> Summary:
        """The evaluation of all detections, or of those with ``score > score_threshold``."""
        keep = None if score_threshold is None else self.matched.inp.dt_score > score_threshold
        acc = accumulate(self.matched, keep)
        if self.protocol == "lvis":
            stats: list[float] | dict[str, float] = lvis_results(acc, self.freq_groups)
        else:
            stats = coco_stats(acc, self.matched.max_dets_list)
        cat_ids = [self.cat_ids[k] for k in acc.cat_index.tolist()]
        return Summary(stats, acc.precision[:, :, :, 0, -1], cat_ids, acc.lrp)
