"""``rsdet report ... --plot``: each run's precision-recall curves as ``pr_curves.png`` beside it.

The curves are the ``pr_curve`` blocks of metrics.json (docs/evaluation.md, "Per-class metrics"):
the evaluator's interpolated precision at the 101 recall points, averaged over the classes with
ground truth, at IoU 0.5, at IoU 0.75 and over IoU .50:.95, at area "all" and the protocol's
maximum detections. The mean height of a curve is the matching AP. One panel per IoU type (box,
mask).
"""

from __future__ import annotations

from pathlib import Path

from rsdet.records import RunRecord
from rsdet.report.plots import Figure, _pyplot, _save
from rsdet.vis.pr import CURVES, defined_points, read_pr_curve

FILE = "pr_curves.png"
_STYLE = {"AP50": ("tab:blue", "-"), "AP75": ("tab:orange", "--"), "AP": ("black", "-")}


def curves(run: RunRecord) -> dict[str, dict]:
    """``{iou_type: {"recall": [...], "AP": [...], "AP50": [...], "AP75": [...], "metrics": {...}}}``
    for each IoU type whose metrics.json block has a well-formed ``pr_curve`` (others are skipped;
    rsdet.vis.pr.read_pr_curve)."""
    metrics = run.metrics or {}
    out: dict[str, dict] = {}
    for iou_type in ("bbox", "segm"):
        section = metrics.get(iou_type)
        block = read_pr_curve(section)
        if block is not None:
            out[iou_type] = {**block, "metrics": {k: section.get(k) for k, _ in CURVES}}
    return out


def plot_pr_curves(data: dict[str, dict], path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(data), figsize=(4.6 * len(data), 4.0), squeeze=False)
    for ax, (iou_type, c) in zip(axes[0], data.items()):
        for key, label in CURVES:
            color, style = _STYLE[key]
            xs, ys = defined_points(c["recall"], c[key])  # -1: undefined
            if not xs:
                continue
            value = c["metrics"].get(key)
            if isinstance(value, (int, float)) and value >= 0:
                label = f"{label} ({key} {100 * value:.1f})"
            ax.plot(xs, ys, linestyle=style, color=color, label=label)
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
