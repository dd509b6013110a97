"""`rsdet report DIR --table sN [--paper]`: a supplementary table's layout filled with our runs.

Each cell of a table in ``paper_values.json`` (docs/paper.md) carries the settings that produce it:
the table's ``setting`` plus its row's and column's ``config`` (the dataset aside: the published numbers are
COCO/LVIS, ours may come from the embedded data). A run belongs to a cell when every one
of those keys has that value in the run (group choices such as ``loss=rs`` or dotted config keys such
as ``loss.delta=0.25``); the cell shows the mean ± std over the matching runs (seeds), and with
``--paper`` the published value and our difference from it.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from rsdet.errors import RsdetError
from rsdet.records import RunRecord
from rsdet.report.axes import MISSING, RunAxes
from rsdet.report.metrics import fmt, metric_value, scale
from rsdet.report.render import latex_escape
from rsdet.report.paper import load_paper_tables

#: The experiment preset that produces each table's runs (conf/experiment/).
PRESETS = {"S1": "table_s1", "S2": "table_s2", "S3": "table_s3", "S4": "table_s4", "S5": "table_s5",
           "S6": "table_s6", "S8": "table_s8"}


@dataclass
class PaperCell:
    values: list[float] = field(default_factory=list)
    paper: float | str | None = None
    metric: str = "AP"

    def ours(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None


def table_name(name: str) -> str:
    key = name.strip().upper()
    return key if key.startswith("S") else f"S{key}"


def _same(run_value, wanted) -> bool:
    if run_value is MISSING:
        return False
    if isinstance(wanted, bool) or wanted is None:
        return str(run_value).lower() == str(wanted).lower()
    if isinstance(wanted, (int, float)):
        try:
            return math.isclose(float(run_value), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(run_value) == str(wanted)


def fill_table(runs: list[RunRecord], table: str) -> tuple[dict, list[list[PaperCell]], int]:
    """The table's spec, its cells filled with the matching completed runs, and how many runs matched."""
    name = table_name(table)
    tables = load_paper_tables()
    if name not in tables:
        raise RsdetError(f"--table {table}: the supplementary has no table {name}; tables: "
                         f"{', '.join(sorted(tables, key=lambda t: int(t[1:])))}")
    spec = tables[name]
    axes = [RunAxes.of(r) for r in runs if r.status == "completed"]
    cells, used = [], set()
    for i, row in enumerate(spec["rows"]):
        out = []
        for j, col in enumerate(spec["cols"]):
            want = {**(spec.get("setting") or {}), **(row.get("config") or {}), **(col.get("config") or {})}
            want.pop("dataset", None)  # the paper's numbers are COCO/LVIS; ours may come from the embedded data
            metric = col.get("metric") or row.get("metric") or (spec.get("metrics") or ["AP"])[0]
            cell = PaperCell(paper=spec["values"][i][j], metric=metric)
            for ax in axes:
                if all(_same(ax.get(k), v) for k, v in want.items()):
                    value = metric_value(ax.run, metric)
                    if value is not None:
                        cell.values.append(value)
                        used.add(ax.run.dir)
            out.append(cell)
        cells.append(out)
    return spec, cells, len(used)


def _ours_text(cell: PaperCell) -> str:
    if not cell.values:
        return "—"
    text = fmt(cell.metric, scale(cell.metric, statistics.fmean(cell.values), raw=False), raw=False)
    if len(cell.values) > 1:
        text += f" ± {fmt(cell.metric, scale(cell.metric, statistics.stdev(cell.values), raw=False), raw=False)}"
    return text


def _diff_text(cell: PaperCell) -> str:
    ours = cell.ours()
    if ours is None or not isinstance(cell.paper, (int, float)):
        return "—"
    return f"{scale(cell.metric, ours, raw=False) - float(cell.paper):+.1f}"


def table_rows(spec: dict, cells: list[list[PaperCell]], paper: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows as text: one column per paper column, or three (ours, paper, Δ) with ``paper``."""
    header = [" / ".join(spec.get("row_header") or ["row"])]
    for col in spec["cols"]:
        header += [col["label"]] if not paper else [f"{col['label']} (ours)", f"{col['label']} (paper)",
                                                     f"{col['label']} (Δ)"]
    rows = []
    for row, row_cells in zip(spec["rows"], cells):
        line = [row["label"]]
        for cell in row_cells:
            line.append(_ours_text(cell))
            if paper:
                line += ["—" if cell.paper is None else str(cell.paper), _diff_text(cell)]
        rows.append(line)
    return header, rows


def render(header: list[str], rows: list[list[str]], kind: str) -> str:
    if kind == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    if kind == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows])
        return buf.getvalue()
    if kind == "tex":
        lines = [r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
                 " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in rows]
        return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
    raise ValueError(kind)


def report_paper_table(runs: list[RunRecord], table: str, paper: bool, out_stem: Path | None,
                       console=None) -> dict[str, Path]:
    """Print the table (rich) and write Markdown/CSV/LaTeX copies to ``out_stem`` (unless None)."""
    from rich.console import Console
    from rich.table import Table

    spec, cells, used = fill_table(runs, table)
    name = table_name(table)
    if used == 0:
        preset = PRESETS.get(name)
        how = (f"`rsdet train -m experiment={preset}`" if preset else
               "a sweep over the table's settings (no preset exists for it yet)")
        raise RsdetError(f"no completed run under the given folder matches a cell of Table {name} "
                         f"({spec.get('title', '')}); produce them with {how}")
    header, rows = table_rows(spec, cells, paper)
    rich_table = Table(title=f"Table {name}: {spec.get('title', '')}")
    for h in header:
        rich_table.add_column(h, justify="left" if h == header[0] else "right")
    for r in rows:
        rich_table.add_row(*r)
    (console or Console()).print(rich_table)
    written = {}
    if out_stem is not None:
        for kind in ("md", "csv", "tex"):
            path = Path(f"{out_stem}.{kind}")
            path.write_text(render(header, rows, kind), encoding="utf-8")
            written[kind] = path
    return written
