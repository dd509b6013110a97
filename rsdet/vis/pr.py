"""The precision-recall curves of an evaluation, read from its metrics (the W&B plots and ``rsdet report
--plot`` draw them).

The evaluator computes them (``evaluate(..., per_class=True)``, as every training run's evaluations
do; docs/evaluation.md, "Per-class metrics"): a ``pr_curve`` block beside the AP keys, ``{"recall":
the 101 recall points 0, 0.01, ..., 1, "AP50": [...], "AP75": [...], "AP": [...]}``, COCOeval's (or
LVISEval's) interpolated precision at each recall point averaged over the classes where it is defined
(area "all", the protocol's maximum detections), at IoU 0.5, at IoU 0.75, and averaged over IoU
.50:.95 too; -1 where no class is defined. The mean of a curve over the recall points is the AP of
its key. Nothing here matches detections again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: (key of the pr_curve block, what its line shows), in drawing order
CURVES = (("AP50", "IoU 0.50"), ("AP75", "IoU 0.75"), ("AP", "mean over IoU .50:.95"))


def _numbers(values) -> list[float] | None:
    if not isinstance(values, list) or not values:
        return None
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        out.append(float(v))
    return out


def read_pr_curve(metrics: Mapping | None) -> dict[str, list[float]] | None:
    """``{"recall": [...], "AP50": [...], "AP75": [...], "AP": [...]}`` from one IoU type's metrics
    (its ``pr_curve`` block), or None when the block is missing, malformed (records are untrusted: a
    non-number, a length that differs from ``recall``) or has no defined point."""
    block = metrics.get("pr_curve") if isinstance(metrics, Mapping) else None
    if not isinstance(block, Mapping):
        return None
    recall = _numbers(block.get("recall"))
    lines = {key: _numbers(block.get(key)) for key, _ in CURVES}
    if recall is None or any(v is None or len(v) != len(recall) for v in lines.values()):
        return None
    if all(p < 0 for v in lines.values() for p in v):
        return None  # no class with ground truth: nothing to draw
    return {"recall": recall, **lines}


def defined_points(recall: list[float], precision: list[float]) -> tuple[list[float], list[float]]:
    """The (recall, precision) points of a curve where precision is defined (not -1)."""
    pts = [(r, p) for r, p in zip(recall, precision) if p >= 0]
    return [r for r, _ in pts], [p for _, p in pts]
