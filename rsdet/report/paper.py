"""The published numbers of the supplementary's Tables S1-S11, read from ``paper_values.json``.

The file (package data next to this module; its layout is described in docs/paper.md) holds every table's
rows and columns in the paper's order and wording, the rsdet metric each column reports and, where the
mapping is obvious, the rsdet config values a row or column stands for. Values are as printed: AP 39.6
(not 0.396), seconds, fps; a pos:neg ratio as the text ``"1:702"``; N/A as null.

    from rsdet.report.paper import paper_value
    paper_value("S8", "RS Loss (Ours) | None | None", "AP")                    # 39.6
    paper_value("S11", "0.60", "RS-Mask R-CNN", "segm/AP")                     # 25.2
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources

from rsdet.errors import RsdetError

DATA_FILE = "paper_values.json"


class PaperValueError(RsdetError, KeyError):
    """A table, row, column or metric that the supplementary's tables do not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@lru_cache(maxsize=1)
def _tables() -> dict:
    text = resources.files("rsdet.report").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return json.loads(text)["tables"]


def load_paper_tables() -> dict:
    """``{"S1": {"title", "section", "row_header", "rows", "cols", "metrics", "values", ...}, ...}``
    (a copy: callers may change it freely)."""
    return copy.deepcopy(_tables())


def column_key(col: dict) -> str:
    """``"Group / label"`` for a column under a spanning header, else its label."""
    return f"{col['group']} / {col['label']}" if col.get("group") else col["label"]


def _table(table: str) -> dict:
    tables = _tables()
    name = table.strip().upper()
    if not name.startswith("S"):
        name = "S" + name
    if name not in tables:
        raise PaperValueError(f"unknown supplementary table {table!r}; valid tables: {', '.join(tables)}")
    return tables[name]


def _norm(text: str) -> str:
    return " ".join(str(text).split()).lower()


def _row_index(name: str, spec: dict, row: str) -> int:
    labels = [r["label"] for r in spec["rows"]]
    for i, label in enumerate(labels):
        if label == row:
            return i
    hits = [i for i, label in enumerate(labels) if _norm(label) == _norm(row)]
    if len(hits) == 1:
        return hits[0]
    raise PaperValueError(f"table {name} has no row {row!r}; valid rows: {'; '.join(labels)}")


def _col_index(name: str, spec: dict, col: str, metric: str | None) -> int:
    cols = spec["cols"]
    keys = [column_key(c) for c in cols]
    valid = f"valid columns: {'; '.join(keys)}"
    hits = [i for i, k in enumerate(keys) if _norm(k) == _norm(col)]
    if not hits:  # a bare label, unique in the table or narrowed down by the metric
        hits = [i for i, c in enumerate(cols) if _norm(c["label"]) == _norm(col)]
    if not hits:  # a spanning header ("RS-Mask R-CNN") with the metric picking the column under it
        hits = [i for i, c in enumerate(cols) if _norm(c.get("group", "")) == _norm(col)]
        if hits and metric is None:
            raise PaperValueError(f"table {name}: {col!r} spans several columns; pass a metric "
                                  f"({', '.join(cols[i]['metric'] for i in hits)}) or one of the {valid}")
    if not hits:
        raise PaperValueError(f"table {name} has no column {col!r}; {valid}")
    if metric is not None:
        narrowed = [i for i in hits if _norm(cols[i]["metric"]) == _norm(metric)]
        if not narrowed:
            raise PaperValueError(f"table {name}, column {col!r} does not report metric {metric!r}; it reports "
                                  f"{', '.join(sorted({cols[i]['metric'] for i in hits}))}")
        hits = narrowed
    if len(hits) > 1:
        raise PaperValueError(f"table {name}: column {col!r} is ambiguous; name it as one of "
                              f"{'; '.join(keys[i] for i in hits)}")
    return hits[0]


def paper_cell(table: str, row: str, col: str, metric: str | None = None) -> float | str | None:
    """The cell exactly as stored: a number, a ratio text such as ``"1:702"``, or None for N/A."""
    spec = _table(table)
    name = next(k for k, v in _tables().items() if v is spec)
    return spec["values"][_row_index(name, spec, row)][_col_index(name, spec, col, metric)]


def paper_value(table: str, row: str, col: str, metric: str | None = None) -> float | None:
    """The published value of one cell of supplementary Table ``table`` (``"S8"``; ``"8"`` works too).

    ``row`` and ``col`` are labels as printed (see :func:`load_paper_tables`; whitespace and case are
    ignored); a column under a spanning header is ``"Group / label"``, or its label alone when that is
    unique in the table, or the spanning header with ``metric`` naming the column under it. A pos:neg
    ratio ``"1:k"`` (Table S7) is returned as k, negatives per positive; N/A as None."""
    value = paper_cell(table, row, col, metric)
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    pos, _, neg = value.partition(":")
    return float(neg) / float(pos)
