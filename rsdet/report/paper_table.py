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
from rsdet.records import RunRecord, atomic_write_text
from rsdet.report.axes import MISSING, RunAxes
from rsdet.report.metrics import fmt, is_percent, metric_value, scale
from rsdet.report.paper import column_key, load_paper_tables
from rsdet.report.render import latex_escape
from rsdet.safe_text import printable, rich_text

#: The experiment preset that produces each table's runs (conf/experiment/).
PRESETS = {"S1": "table_s1", "S2": "table_s2", "S3": "table_s3", "S4": "table_s4", "S5": "table_s5",
           "S6": "table_s6", "S8": "table_s8"}

_THRESHOLDS = "1e-4,1e-3,1e-2,0.1,0.4,0.6,0.8"

#: The command(s) that make a table's runs, for the message when none is found.
HOW_TO = {
    "S6": "`rsdet train -m experiment=table_s6 detector=yolact` (needs the YOLACT detector)",
    "S7": "`rsdet train -m experiment=table_s8` (Table S7 reads the first epoch of each RS run's history.jsonl)",
    "S9": "runs of each detector with RS and with its standard loss, e.g. `rsdet train -m loss=rs,ce` and "
          "`rsdet train -m detector=atss loss=rs,focal`, `rsdet train -m detector=solov2_light loss=rs,focal` (sec/iteration comes from history.jsonl; "
          "`python scripts/bench_table_s9.py` times both on the same batches in one process)",
    "S10": "`rsdet train loss=rs`, then `rsdet evaluate RUN_DIR --score-thresholds 0.4` in the run directory "
           "(fps at the RS test threshold)",
    "S11": f"`rsdet train -m loss=rs,ce`, then `rsdet evaluate RUN_DIR --score-thresholds {_THRESHOLDS}` "
           "in each run directory",
}

#: Each detector's standard loss (Table S9's "Standard Loss" column): the recipe the paper compares RS with.
STANDARD_LOSS = {"faster_rcnn": "ce", "cascade_rcnn": "ce", "mask_rcnn": "ce", "atss": "focal", "paa": "focal",
                 "yolact": "ce", "solov2": "focal", "solov2_light": "focal", "solov2_r101": "focal"}

#: Settings of the paper that our runs are not required to share: the dataset everywhere (the published
#: numbers are COCO/LVIS, ours may come from the embedded data), and Table S11's Mask R-CNN (the threshold
#: sweep of any detector fills its box columns; the mask columns need a mask detector).
IGNORED = {"*": {"dataset"}, "S11": {"detector"}}


def how_to_make(name: str) -> str:
    if name in HOW_TO:
        return HOW_TO[name]
    if name in PRESETS:
        return f"`rsdet train -m experiment={PRESETS[name]}`"
    return "a sweep over the table's settings (no preset exists for it yet)"


@dataclass
class PaperCell:
    values: list[float] = field(default_factory=list)
    paper: float | str | None = None
    metric: str = "AP"
    runs: list[RunRecord] = field(default_factory=list)  # the runs behind ``values``, in the same order

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


def run_setting(ax: RunAxes, key: str):
    """The run's value of ``key`` as a table cell names it: a group choice (``loss``), a dotted config
    key (``loss.delta``), ``sampler.<stage>`` with ``auto`` resolved to the loss recipe's default, and —
    for records without Hydra choices (older or hand-made runs) — a group's ``name`` in config.yaml."""
    from rsdet.report.run_data import resolved_sampler

    if key.startswith("sampler.") and ax.config:
        stage = key.split(".", 1)[1]
        kind = resolved_sampler(ax.config, stage)
        if kind is not None:
            return kind
    value = ax.get(key)
    if key not in ax.choices and "." not in key and isinstance(ax.config, dict):
        node = ax.config.get(key)
        if isinstance(node, dict) and node.get("name") is not None:
            return node["name"]
    return value


def _matches(ax: RunAxes, key: str, wanted) -> bool:
    if key == "loss" and wanted == "standard":  # Table S9: the detector's own default loss
        detector = run_setting(ax, "detector")
        loss = run_setting(ax, "loss")
        standard = STANDARD_LOSS.get(str(detector))
        return loss is not MISSING and (str(loss) == standard if standard else str(loss) != "rs")
    return _same(run_setting(ax, key), wanted)


def _holds_default(ax: RunAxes, key: str, default) -> bool:
    value = run_setting(ax, key)
    return value is MISSING or _same(value, default)


def _row_metric(row: dict, metric: str) -> str:
    """Rows of masks (Table S10's Instance Segmentation part, Table S7's LVIS row: its AP is Mask R-CNN's mask
    AP) read the mask version of their AP-type columns; ratios, timings and fps stay as they are."""
    from rsdet.report.metrics import is_percent  # noqa: PLC0415

    if row.get("iou_type") == "segm" and is_percent(metric) and not metric.startswith("segm/"):
        return f"segm/{metric}"
    return metric


def fill_table(runs: list[RunRecord], table: str) -> tuple[dict, list[list[PaperCell]], int]:
    """The table's spec, its cells filled with the matching completed runs, and how many runs matched.

    A row without ``config`` in a table whose other rows have one (Table S10's R-101 and "+" rows) is a
    setting rsdet does not reproduce: no run fills it. A row whose ``config`` has ``score_threshold``
    (Table S11) takes its value from the run's score-threshold sweep at that threshold."""
    from rsdet.report.run_data import sweep_metric, sweep_row_at

    name = table_name(table)
    tables = load_paper_tables()
    if name not in tables:
        raise RsdetError(f"--table {table}: the supplementary has no table {name}; tables: "
                         f"{', '.join(sorted(tables, key=lambda t: int(t[1:])))}")
    spec = tables[name]
    ignored = IGNORED["*"] | IGNORED.get(name, set())
    axes = [RunAxes.of(r) for r in runs if r.status == "completed"]
    some_rows_configured = any(r.get("config") for r in spec["rows"])
    cells, used = [], set()
    for i, row in enumerate(spec["rows"]):
        out = []
        reproducible = bool(row.get("config")) or not some_rows_configured
        for j, col in enumerate(spec["cols"]):
            want = {**(spec.get("setting") or {}), **(row.get("config") or {}), **(col.get("config") or {})}
            for key in ignored:
                want.pop(key, None)
            threshold = want.pop("score_threshold", None)
            metric = col.get("metric") or row.get("metric") or (spec.get("metrics") or ["AP"])[0]
            metric = _row_metric(row, metric)
            cell = PaperCell(paper=spec["values"][i][j], metric=metric)
            # the paper's fixed values of the other ablation axes (e.g. δ_RS 0.5 in Table S1): a run that
            # sets one of them differently belongs to another table's cell; a run whose record lacks
            # the key (older rsdet) is taken as the default
            held = {k: v for k, v in (spec.get("defaults") or {}).items() if k not in want}
            if reproducible:
                for ax in axes:
                    if not all(_matches(ax, k, v) for k, v in want.items()):
                        continue
                    if not all(_holds_default(ax, k, v) for k, v in held.items()):
                        continue
                    if threshold is not None:
                        sweep = sweep_row_at(ax.run, float(threshold))
                        value = sweep_metric(sweep, metric) if sweep else None
                    else:
                        value = metric_value(ax.run, metric)
                    if value is not None:
                        cell.values.append(value)
                        cell.runs.append(ax.run)
                        used.add(ax.run.dir)
            out.append(cell)
        cells.append(out)
    return spec, cells, len(used)


def used_runs(cells: list[list[PaperCell]]) -> list[RunRecord]:
    """The runs behind a filled table, each once, in the order they first fill a cell."""
    seen: dict = {}
    for row in cells:
        for cell in row:
            for run in cell.runs:
                seen.setdefault(run.dir, run)
    return list(seen.values())


def is_ratio(metric: str) -> bool:
    """Negatives per positive (Table S7), printed as the paper does: ``1:k``."""
    return metric.startswith("desired_ratio/") or metric.endswith("neg_per_pos")


def _ours_text(cell: PaperCell) -> str:
    if not cell.values:
        return "—"
    if is_ratio(cell.metric):
        text = f"1:{statistics.fmean(cell.values):.0f}"
        return text + (f" ± {statistics.stdev(cell.values):.0f}" if len(cell.values) > 1 else "")
    text = fmt(cell.metric, scale(cell.metric, statistics.fmean(cell.values), raw=False), raw=False)
    if len(cell.values) > 1:
        text += f" ± {fmt(cell.metric, scale(cell.metric, statistics.stdev(cell.values), raw=False), raw=False)}"
    return text


def _diff_text(cell: PaperCell) -> str:
    ours = cell.ours()
    if ours is not None and is_ratio(cell.metric) and isinstance(cell.paper, str):
        pos, _, neg = cell.paper.partition(":")
        try:
            return f"×{ours / (float(neg) / float(pos)):.2g}"  # ratios span 1 to 10^4: compare by factor
        except (ValueError, ZeroDivisionError):
            return "—"
    if ours is None or not isinstance(cell.paper, (int, float)):
        return "—"
    diff = scale(cell.metric, ours, raw=False) - float(cell.paper)
    return f"{diff:+.1f}" if is_percent(cell.metric) or cell.metric == "fps" else f"{diff:+.2f}"


def table_rows(spec: dict, cells: list[list[PaperCell]], paper: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows as text: the row header's column(s) as printed (Table S8: Loss, RPN, R-CNN), then
    one column per paper column, or three (ours, paper, Δ) with ``paper``."""
    header = list(spec.get("row_header") or ["row"])
    split = len(header) > 1 and all(len(r.get("cells") or []) == len(header) for r in spec["rows"])
    if not split:
        header = [" / ".join(header)]
    for col in spec["cols"]:
        label = column_key(col)  # "Mask R-CNN / AP_box": a label under a spanning header is not unique
        header += [label] if not paper else [f"{label} (ours)", f"{label} (paper)", f"{label} (Δ)"]
    rows = []
    for row, row_cells in zip(spec["rows"], cells):
        line = list(row["cells"]) if split else [row["label"]]
        for cell in row_cells:
            line.append(_ours_text(cell))
            if paper:
                line += ["—" if cell.paper is None else str(cell.paper), _diff_text(cell)]
        rows.append(line)
    return header, rows


def label_columns(spec: dict) -> int:
    """How many leading columns of :func:`table_rows` hold the row label (1, or the row header's parts)."""
    header = spec.get("row_header") or ["row"]
    split = len(header) > 1 and all(len(r.get("cells") or []) == len(header) for r in spec["rows"])
    return len(header) if split else 1


def render(header: list[str], rows: list[list[str]], kind: str) -> str:
    if kind == "md":
        def esc(cells):  # one line per row (printable); a row label such as "COCO | None | None" stays one cell
            return " | ".join(printable(c).replace("|", "\\|") for c in cells)

        lines = ["| " + esc(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + esc(r) + " |" for r in rows]) + "\n"
    if kind == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([[printable(c) for c in line] for line in [header, *rows]])
        return buf.getvalue()
    if kind == "tex":
        lines = [r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
                 " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in rows]
        return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
    raise ValueError(kind)


def column_parts(header: list[str], rows: list[list[str]], k: int, step: int, width: int) -> list[list[int]]:
    """Value columns split into parts that fit ``width`` beside the ``k`` label columns (a wide table such as
    S11 with the paper's values is unreadable squeezed into one terminal table); a cell's ours/paper/Δ
    (``step`` 3) stay together. The files always hold the whole table."""
    def need(i: int) -> int:
        words = max((len(w) for w in header[i].split()), default=1)
        return max([words, *(len(r[i]) for r in rows)]) + 4

    base = sum(need(i) for i in range(k)) + 1
    parts: list[list[int]] = [[]]
    used = base
    for j in range(k, len(header), step):
        group = list(range(j, min(j + step, len(header))))
        w = sum(need(i) for i in group)
        if parts[-1] and used + w > width:
            parts.append([])
            used = base
        parts[-1] += group
        used += w
    return parts


def report_paper_table(runs: list[RunRecord], table: str, paper: bool, out_stem: Path | None,
                       console=None) -> dict[str, Path]:
    """Print the table (rich) and write Markdown/CSV/LaTeX copies to ``out_stem`` (unless None)."""
    from rich.console import Console
    from rich.table import Table

    spec, cells, used = fill_table(runs, table)
    name = table_name(table)
    if used == 0:
        raise RsdetError(f"no completed run under the given folder matches a cell of Table {name} "
                         f"({spec.get('title', '')}); produce them with {how_to_make(name)}")
    header, rows = table_rows(spec, cells, paper)
    console = console or Console()
    k = label_columns(spec)
    parts = column_parts(header, rows, k, 3 if paper else 1, console.width)
    for n, part in enumerate(parts, 1):
        more = f" (columns, part {n}/{len(parts)})" if len(parts) > 1 else ""
        rich_table = Table(title=rich_text(f"Table {name}: {spec.get('title', '')}{more}"))
        for i in [*range(k), *part]:  # Text cells: shown as they are, never parsed as rich markup
            rich_table.add_column(rich_text(header[i]), justify="left" if i < k else "right")
        for r in rows:
            rich_table.add_row(*(rich_text(r[i]) for i in [*range(k), *part]))
        console.print(rich_table)
    written = {}
    if out_stem is not None:
        for kind in ("md", "csv", "tex"):
            path = Path(f"{out_stem}.{kind}")
            atomic_write_text(path, render(header, rows, kind))  # a planted symlink is replaced, not followed
            written[kind] = path
    return written
