"""The per-class block of an evaluation as a table: rows for the terminal, Markdown and CSV.

``evaluate(..., per_class=True)`` (and every training run's metrics.json) holds, per IoU type,
``per_class``: ``{category_id: {"name", "AP", "AP50", "oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN",
"lrp_optimal_threshold", "num_gt"[, "frequency"]}}`` (docs/evaluation.md, "Per-class metrics").
Read back from JSON the ids are strings; records written before AP50 / num_gt existed lack them
and show "–" there. Used by ``rsdet evaluate --per-class`` and ``rsdet report --per-class``.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Mapping

from rich.table import Table

from rsdet.safe_text import printable, rich_text

#: (key in the entry, column header); percent columns are fractions shown x100
COLUMNS = (("id", "id"), ("name", "name"), ("frequency", "freq"), ("num_gt", "GT"), ("AP", "AP"),
           ("AP50", "AP50"), ("oLRP", "oLRP"), ("oLRP_Loc", "oLRP_Loc"), ("oLRP_FP", "oLRP_FP"),
           ("oLRP_FN", "oLRP_FN"), ("lrp_optimal_threshold", "LRP thr"))
_PERCENT = {"AP", "AP50", "oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN"}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _sort_key(cat: Any):
    try:
        return (0, int(cat), "")
    except (TypeError, ValueError):
        return (1, 0, str(cat))


def rows(block: Mapping) -> list[dict[str, Any]]:
    """One dict per class (``id`` plus the entry's fields), in ascending category id; entries that
    are not objects are skipped."""
    out = []
    for cat in sorted(block, key=_sort_key):
        entry = block[cat]
        if isinstance(entry, Mapping):
            out.append({"id": cat, **entry})
    return out


def columns(table_rows: list[dict]) -> list[tuple[str, str]]:
    """The columns present: ``frequency`` only for LVIS-style entries, the rest always."""
    return [(k, h) for k, h in COLUMNS if k != "frequency" or any("frequency" in r for r in table_rows)]


def cell(row: Mapping, key: str) -> str:
    """One cell as shown: percent with one decimal, the LRP threshold with three, "–" if undefined."""
    value = row.get(key)
    if key in ("id", "name", "frequency"):  # text from a record: on one line, controls made visible
        return "–" if value is None else printable(value)
    number = _number(value)
    if number is None or number < 0:  # -1 marks an undefined value
        return "–"
    if key in _PERCENT:
        return f"{100 * number:.1f}"
    if key == "num_gt":
        return str(int(number))
    return f"{number:.3f}"


def rich_table(block: Mapping, title: str | None = None) -> Table:
    """The per-class block as a ``rich`` table (metrics in percent; lower is better for oLRP)."""
    table_rows = rows(block)
    cols = columns(table_rows)
    table = Table(title=rich_text(title) if title else None,
                  caption="AP, oLRP and components in %; oLRP*: lower is better")
    for key, header in cols:
        table.add_column(header, justify="left" if key in ("name", "frequency") else "right")
    for r in table_rows:
        table.add_row(*(rich_text(cell(r, k)) for k, _ in cols))
    return table


def markdown(block: Mapping, title: str | None = None) -> str:
    """A Markdown table (same cells as :func:`rich_table`)."""
    table_rows = rows(block)
    cols = columns(table_rows)
    lines = [f"### {printable(title)}", ""] if title else []
    lines.append("| " + " | ".join(h for _, h in cols) + " |")
    lines.append("|" + "|".join(":--" if k in ("name", "frequency") else "--:" for k, _ in cols) + "|")
    for r in table_rows:
        lines.append("| " + " | ".join(cell(r, k).replace("|", "\\|") for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def csv_text(blocks: Mapping[str, Mapping]) -> str:
    """CSV of several blocks (``{iou_type: block}``) with an ``iou_type`` column; raw fractions."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = [k for k, _ in COLUMNS]
    writer.writerow(["iou_type", *keys])
    for iou_type, block in blocks.items():
        for r in rows(block):
            writer.writerow([iou_type, *("" if r.get(k) is None else printable(r.get(k)) if isinstance(r.get(k), str)
                                         else r.get(k) for k in keys)])
    return buf.getvalue()
