"""``rsdet report DIR --per-class``: each run's per-class AP and oLRP components, one table per run
and IoU type, from the ``per_class`` blocks of its metrics.json (docs/evaluation.md, "Per-class
metrics"). Beside each run it writes ``per_class.md`` (a table per IoU type) and ``per_class.csv``
(raw fractions, an ``iou_type`` column)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rich.markup import escape

from rsdet.evaluation import per_class as tables
from rsdet.records import RunRecord, atomic_write_text
from rsdet.safe_text import printable

IOU_TYPES = ("bbox", "segm")
MARKDOWN_FILE = "per_class.md"
CSV_FILE = "per_class.csv"


def blocks(run: RunRecord) -> dict[str, Mapping]:
    """``{iou_type: per_class block}`` of a run's metrics.json (empty when it has none)."""
    metrics = run.metrics or {}
    out = {}
    for iou_type in IOU_TYPES:
        section = metrics.get(iou_type)
        if isinstance(section, Mapping) and isinstance(section.get("per_class"), Mapping):
            out[iou_type] = section["per_class"]
    return out


def report(runs: list[RunRecord], console, write: bool = True) -> list[Path]:
    """Print the tables of every run; with ``write`` also the files beside each run. Returns the
    files written. A run without per-class blocks gets one line saying how to produce them."""
    written: list[Path] = []
    label = {"bbox": "box", "segm": "mask"}
    for run in runs:
        found = blocks(run)
        name = getattr(run, "label", run.dir.name)
        if not found:
            console.print(f"{escape(printable(name))}: no per-class metrics in metrics.json (runs record them since "
                          f"per-class evaluation exists; `rsdet evaluate {escape(printable(run.dir))}` evaluates again)")
            continue
        for iou_type, block in found.items():
            console.print(tables.rich_table(block, title=f"{name} — {label[iou_type]} AP per class"))
        if write:
            md = "\n".join(tables.markdown(b, title=f"{name}: {label[t]} AP per class") for t, b in found.items())
            atomic_write_text(run.dir / MARKDOWN_FILE, md)
            atomic_write_text(run.dir / CSV_FILE, tables.csv_text(found))
            written += [run.dir / MARKDOWN_FILE, run.dir / CSV_FILE]
    return written
