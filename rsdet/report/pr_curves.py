"""``rsdet report ... --plot``: each run's precision-recall curves as ``pr_curves.png`` beside it.

The curves are the ``pr_curve`` blocks of metrics.json (docs/evaluation.md, "Per-class metrics"):
the evaluator's interpolated precision at the 101 recall points, averaged over the classes with
ground truth, at IoU 0.5, at IoU 0.75 and over IoU .50:.95, at area "all" and the protocol's
maximum detections. The mean height of a curve is the matching AP. One panel per IoU type (box,
mask).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from rsdet.records import RunRecord
from rsdet.report.plots import Figure, _pyplot, _save

FILE = "pr_curves.png"
_CURVES = (("AP50", "IoU 0.50", "tab:blue", "-"), ("AP75", "IoU 0.75", "tab:orange", "--"),
           ("AP", "mean over IoU .50:.95", "black", "-"))


def _numbers(values) -> list[float] | None:
    if not isinstance(values, list) or not values:
        return None
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        out.append(float(v))
    return out


def curves(run: RunRecord) -> dict[str, dict]:
    """``{iou_type: {"recall": [...], "AP": [...], "AP50": [...], "AP75": [...], "metrics": {...}}}``
    for each IoU type whose metrics.json block has a well-formed ``pr_curve`` (others are skipped)."""
    metrics = run.metrics or {}
    out: dict[str, dict] = {}
    for iou_type in ("bbox", "segm"):
        section = metrics.get(iou_type)
        block = section.get("pr_curve") if isinstance(section, Mapping) else None
        if not isinstance(block, Mapping):
            continue
        recall = _numbers(block.get("recall"))
        lines = {k: _numbers(block.get(k)) for k, *_ in _CURVES}
        if recall is None or any(v is None or len(v) != len(recall) for v in lines.values()):
            continue
        if all(p < 0 for v in lines.values() for p in v):
            continue  # no class with ground truth: nothing to draw
        out[iou_type] = {"recall": recall, **lines,
                         "metrics": {k: section.get(k) for k, *_ in _CURVES}}
    return out


def plot_pr_curves(data: dict[str, dict], path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(data), figsize=(4.6 * len(data), 4.0), squeeze=False)
    for ax, (iou_type, c) in zip(axes[0], data.items()):
        for key, label, color, style in _CURVES:
            pts = [(r, p) for r, p in zip(c["recall"], c[key]) if p >= 0]  # -1: undefined
            if not pts:
                continue
            value = c["metrics"].get(key)
            if isinstance(value, (int, float)) and value >= 0:
                label = f"{label} ({key} {100 * value:.1f})"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=style, color=color, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision (interpolated, mean over classes)")
        ax.set_title({"bbox": "box", "segm": "mask"}.get(iou_type, iou_type))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def write_pr_curves(runs: list[RunRecord]) -> list[Figure]:
    """Draw ``pr_curves.png`` into every run that has PR curves; return the figures."""
    figs = []
    for run in runs:
        data = curves(run)
        if not data:
            continue
        label = getattr(run, "label", run.dir.name)
        figs.append(Figure(plot_pr_curves(data, run.dir / FILE, f"precision-recall: {label}"),
                           f"precision-recall curves of {label}"))
    return figs
