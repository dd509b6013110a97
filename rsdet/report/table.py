"""Pivot run records into a results table (rows × columns of one or more metrics).

``build_table(runs, rows=["loss"], cols=["sampler.rpn", "sampler.rcnn"], metric="AP")`` is
supplementary Table S8 once the runs exist. Runs that land in the same cell (different seeds, or an
axis left out of rows/cols) are summarised as mean ± sample std with their count; runs without final
metrics (failed, running, interrupted, unreadable) show their status in the cell and their reason in
a numbered footnote — no run is dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rsdet.errors import ConfigError
from rsdet.records import RunRecord
from rsdet.report import metrics as M
from rsdet.report.axes import (MISSING, Axes, RunAxes, _determined, detect_axes, ordered_values, resolve_axis,
                              runs_knowing)


@dataclass
class Column:
    key: tuple              # values of the column axes (empty when metrics are the columns)
    metric: str

    def label(self, multi_metric: bool, sep: str = " · ") -> str:
        parts = [" / ".join(_text(v) for v in self.key)] if self.key else []
        if multi_metric or not self.key:
            parts.append(M.display_name(self.metric))
        return sep.join(parts)


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)       # scaled for display (×100 unless raw)
    pending: list[tuple[str, int]] = field(default_factory=list)  # (status, footnote number)
    without_metric: list[int | None] = field(default_factory=list)  # completed runs lacking it (+ note)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def std(self) -> float | None:
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    def status_text(self) -> str:
        by_status: dict[str, list[int]] = {}
        for status, note in self.pending:
            by_status.setdefault(status, []).append(note)
        return ", ".join(f"{s} [{','.join(map(str, sorted(set(ns))))}]" for s, ns in by_status.items())

    def text(self, metric: str, raw: bool) -> str:
        if self.values:
            out = M.fmt(metric, self.mean, raw)
            if self.n > 1:
                out += f" ± {M.fmt(metric, self.std, raw)} (n={self.n})"
            if self.pending:
                out += f"; {self.status_text()}"
            return out
        if self.pending:
            return self.status_text()
        if self.without_metric:
            marks = sorted({n for n in self.without_metric if n is not None})
            return "n/a" + (f" [{','.join(map(str, marks))}]" if marks else "")
        return ""


@dataclass
class ReportTable:
    row_axes: list[str]
    col_axes: list[str]
    metrics: list[str]
    row_keys: list[tuple]
    columns: list[Column]
    cells: dict[tuple[tuple, int], Cell]
    raw: bool = False
    footnotes: list[str] = field(default_factory=list)   # footnote i+1 explains "[i+1]" markers
    notes: list[str] = field(default_factory=list)       # what was averaged, filtered, left out
    axes: Axes | None = None
    n_runs: int = 0

    def cell(self, row_key: tuple, col_index: int) -> Cell:
        return self.cells.get((row_key, col_index), Cell())

    @property
    def multi_metric(self) -> bool:
        return len(self.metrics) > 1

    def column_label(self, j: int, sep: str = " · ") -> str:
        return self.columns[j].label(self.multi_metric, sep)

    def cell_text(self, row_key: tuple, j: int) -> str:
        return self.cell(row_key, j).text(self.columns[j].metric, self.raw)

    def best_rows(self, j: int) -> set[tuple]:
        """Rows holding the best mean of column ``j`` (max for AP-like, min for oLRP-like metrics)."""
        metric = self.columns[j].metric
        means = {rk: self.cell(rk, j).mean for rk in self.row_keys if self.cell(rk, j).mean is not None}
        if len(means) < 2:
            return set()
        best = (min if M.lower_is_better(metric) else max)(means.values())
        return {rk for rk, v in means.items() if abs(v - best) <= 1e-9 * max(1.0, abs(best))}

    def caption(self) -> str:
        names = ", ".join(M.display_name(m) for m in self.metrics)
        percent = [M.is_percent(m) for m in self.metrics]
        unit = ""
        if any(percent):
            unit = " (fractions)" if self.raw else (" (×100)" if all(percent) else " (AP/oLRP-type ×100)")
        cols = f"; columns: {' / '.join(self.col_axes)}" if self.col_axes else ""
        return f"{names}{unit}{cols}; {self.n_runs} run{'s' if self.n_runs != 1 else ''}"


def _text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def parse_metrics(metric: str | Iterable[str], runs: list[RunRecord]) -> list[str]:
    """``"AP,AP50"``/``["AP", "oLRP"]``/``"all"`` → a validated list of metric names."""
    names = [m.strip() for m in (metric.split(",") if isinstance(metric, str) else metric) if m.strip()]
    out: list[str] = []
    for name in names or ["AP"]:
        if name.lower() == "all":
            out += [n for n in (M.detection_metrics(runs) or ["AP"]) if n not in out]
        elif name not in out:
            out.append(name)
    available = M.available_metrics(runs)
    if available:
        for name in out:
            if not any(M.metric_value(r, name) is not None for r in runs):
                raise ConfigError(f"no run has a metric called {name!r}. Available: {', '.join(available)} "
                                  f"(also segm/<name> for masks and history/<column> for history means).")
    return out


def _matches(value, wanted: str) -> bool:
    if _text(value) == wanted or str(value).lower() == wanted.lower():
        return True
    try:
        return not isinstance(value, bool) and float(value) == float(wanted)
    except (TypeError, ValueError):
        return False


def apply_filters(run_axes: list[RunAxes], filters: Iterable[str] | Mapping | None) -> tuple[list[RunAxes], list[str]]:
    """Keep runs matching every ``key=v1,v2`` (any of the values) and ``key!=v`` filter."""
    if not filters:
        return run_axes, []
    items = list(filters.items()) if isinstance(filters, Mapping) else []
    notes = []
    for f in ([] if isinstance(filters, Mapping) else filters):
        if "=" not in f:
            raise ConfigError(f"--filter {f!r} is not KEY=VALUE (e.g. --filter loss=rs or --filter seed!=0)")
        key, value = f.split("=", 1)
        items.append((key, value))
    for key, value in items:
        negate = key.endswith("!")
        key = resolve_axis(key.rstrip("!").strip(), run_axes)
        wanted = [v.strip() for v in str(value).split(",")]
        run_axes = [ra for ra in run_axes if any(_matches(ra.get(key), w) for w in wanted) != negate]
        notes.append(f"filter: {key} {'!=' if negate else '='} {','.join(wanted)}")
    return run_axes, notes


def build_table(runs: list[RunRecord], rows: list[str] | None = None, cols: list[str] | None = None,
                metric: str | Iterable[str] = "AP", filters: Iterable[str] | Mapping | None = None,
                raw: bool = False) -> ReportTable:
    """Pivot ``runs`` into a :class:`ReportTable`.

    Defaults: one metric → rows are all varying axes but the last, columns the last; several metrics
    (``"AP,AP50,AP75"`` or ``"all"``) → rows are all varying axes, columns the metrics; nothing varies →
    one row per run. Raises :class:`ConfigError` for unknown axes/metrics or filters that match nothing.
    """
    run_axes, notes = apply_filters([RunAxes.of(r) for r in runs], filters)
    if not run_axes:
        raise ConfigError(f"no run matches {' and '.join(n[8:] for n in notes)}; "
                          f"see the values with `rsdet report DIR --list-axes`")
    runs = [ra.run for ra in run_axes]
    metrics = parse_metrics(metric, runs)
    axes = detect_axes(runs)
    rows = [resolve_axis(a, run_axes) for a in rows] if rows is not None else None
    cols = [resolve_axis(a, run_axes) for a in cols] if cols is not None else None
    if rows is None and cols is None:
        if len(metrics) > 1 or len(axes.axes) < 2:
            rows, cols = (list(axes.axes) or ["run"]), []
        else:
            rows, cols = axes.axes[:-1], axes.axes[-1:]
    elif rows is None:
        rows = [a for a in axes.axes if a not in cols]
    elif cols is None:
        cols = [] if len(metrics) > 1 else [a for a in axes.axes if a not in rows]
    both = set(rows) & set(cols)
    if both:
        raise ConfigError(f"{', '.join(sorted(both))} cannot be both a row and a column axis")

    shown = set(rows) | set(cols)
    for a in axes.axes:
        # e.g. the sampler group is spelled out by sampler.rpn + sampler.rcnn: nothing is averaged
        if a not in shown and not _determined(runs_knowing(run_axes, a), rows + cols, a):
            vals = ", ".join(_text(v) for v in axes.info(a).values)
            notes.append(f"averaged over {a} ({vals}) — add it to --rows/--cols to split it out")
    for a in axes.replicates:
        if a not in shown:
            notes.append(f"cells with n>1 show mean ± std over {a} ({len(axes.info(a).values)} values)")

    def order(axis_list: list[str]) -> list[tuple]:
        per_axis = [ordered_values(ra.get(a) for ra in run_axes) for a in axis_list]
        keys = {tuple(ra.get(a) for a in axis_list) for ra in run_axes}
        return sorted(keys, key=lambda k: [per_axis[i].index(v) for i, v in enumerate(k)])

    row_keys, col_keys = order(rows), order(cols)
    columns = [Column(ck, m) for ck in col_keys for m in metrics]
    col_index = {(c.key, c.metric): j for j, c in enumerate(columns)}
    table = ReportTable(rows, cols, metrics, row_keys, columns, {}, raw=raw, notes=notes, axes=axes,
                        n_runs=len(runs))
    note_of: dict[int, int] = {}
    for ra in run_axes:
        run = ra.run
        rk = tuple(ra.get(a) for a in rows)
        ck = tuple(ra.get(a) for a in cols)
        status = run.status
        reason = run.reason
        if reason and id(run) not in note_of:
            table.footnotes.append(f"{run.label}: {reason}")
            note_of[id(run)] = len(table.footnotes)
        for m in metrics:
            cell = table.cells.setdefault((rk, col_index[(ck, m)]), Cell())
            value = M.metric_value(run, m) if status == "completed" else None
            if value is not None:
                cell.values.append(M.scale(m, value, raw))
            elif status != "completed":
                cell.pending.append((status, note_of[id(run)]))
            else:
                cell.without_metric.append(note_of.get(id(run)))
    return table


__all__ = ["Cell", "Column", "ReportTable", "build_table", "parse_metrics", "apply_filters", "MISSING"]
