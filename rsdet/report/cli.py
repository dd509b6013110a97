"""`rsdet report [DIR] ...` — turn a folder of run records (default ``./outputs``) into a results table.

The top-level CLI dispatches here: ``sys.exit(rsdet.report.cli.main(argv))``; also runnable as
``python -m rsdet.report.cli DIR``. Exit codes: 0 table printed, 1 the files could not be written,
2 bad usage (DIR missing on disk, no runs, unknown axis/metric, filter matching nothing).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from rsdet.errors import RsdetError
from rsdet.records import atomic_write_text, find_runs
from rsdet.report.axes import PSEUDO_AXES, detect_axes
from rsdet.report.metrics import available_metrics
from rsdet.report.render import print_table, printable, write_outputs
from rsdet.report.table import _text, build_table

HOW_TO_MAKE_RUNS = ("Produce runs with `rsdet train` (one run in outputs/runs/<date>/<time>_<loss>_<id>) or a sweep such as "
                    "`rsdet train -m loss=rs,ce sampler=none,random` (jobs in outputs/multirun/<date>/<time>_<id>/job<n>).")

EXAMPLES = """\
examples:
  rsdet report outputs                         every run under outputs/, axes detected automatically
  rsdet report multirun/2026-01-05/10-00-00 --list-axes
                                               which settings vary, and the metric names available
  rsdet report multirun/2026-01-05/10-00-00 --rows loss --cols sampler.rpn,sampler.rcnn --metric AP
                                               supplementary Table S8 (loss x RPN/R-CNN sampler)
  rsdet report multirun/... --rows loss,sampler.rpn,sampler.rcnn --metric AP,AP50,AP75
                                               Table S8 laid out as in the paper (metrics as columns)
  rsdet report multirun/... --rows loss.delta --metric AP        Table S4 (delta_RS sweep)
  rsdet report multirun/... --table s4 --paper  Table S4 as printed in the paper, ours beside the published
  rsdet report multirun/... --table s8 --paper --plot --out docs/s8
                                               + docs/s8_samplers.png, curves/s8_<run>.png, linked from docs/s8.md
  rsdet report outputs --table s11 --paper     Table S11 from `rsdet evaluate RUN --score-thresholds ...` sweeps
  rsdet report multirun/... --metric all --filter loss=rs        all AP/oLRP columns, RS runs only
  rsdet report multirun/... --metric history_epoch1/ratio/rpn/task_neg_per_pos
                                               Table S7's measure: the first epoch's mean pos:neg task ratio

metrics: names from metrics.json, e.g. AP AP50 AP75 APs APm APl oLRP oLRP_Loc oLRP_FP oLRP_FN (box),
  segm/AP (mask), train_seconds (top level), history/<column> (mean over history.jsonl),
  history_epoch1/<column> (its first epoch), fps (score-threshold sweep at the run's test threshold), all.
  AP/oLRP-type values are shown x100 with one decimal (--raw: fractions). Runs sharing a cell (e.g.
  seeds) show mean +- std (n=..). Failed/running runs show their status and a numbered reason.
"""


class _WarningHandler(logging.Handler):
    """Show rsdet.records warnings (malformed files) once, in yellow, on stderr."""

    def __init__(self, console):
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {_esc(record.getMessage())}")


def _keys(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [k.strip() for k in text.split(",") if k.strip()]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rsdet report", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Find the run records under DIR, detect which settings vary, and print a results "
                    "table; Markdown, CSV and LaTeX copies are written beside it (DIR/report.{md,csv,tex}).")
    p.add_argument("dir", metavar="DIR", nargs="?", default="outputs",
                   help="folder holding run directories, searched recursively (default: ./outputs, "
                        "where `rsdet train` writes)")
    p.add_argument("--rows", metavar="KEYS", help="comma-separated row axes: group names (loss, sampler), "
                   "dotted config keys (loss.delta, sampler.rpn), or run/status")
    p.add_argument("--cols", metavar="KEYS", help="comma-separated column axes (same names as --rows)")
    p.add_argument("--metric", metavar="M[,M2]", default="AP",
                   help="metric(s) to show (default AP); several or 'all' become columns")
    p.add_argument("--filter", metavar="KEY=VALUE", action="append", default=[],
                   help="keep runs whose KEY equals VALUE (VALUE may be v1,v2; KEY!=VALUE excludes); repeatable")
    p.add_argument("--out", metavar="PATH_STEM", help="write PATH_STEM.{md,csv,tex} (default DIR/report)")
    p.add_argument("--no-write", action="store_true", help="only print the table")
    p.add_argument("--raw", action="store_true", help="show fractions as stored instead of x100")
    p.add_argument("--list-axes", action="store_true", help="list varying settings and metric names, then exit")
    p.add_argument("--table", metavar="SN", help="lay the runs out as supplementary table SN (s1 ... s11): the "
                   "paper's rows, columns and metrics, our mean ± std per cell (docs/paper.md)")
    p.add_argument("--paper", action="store_true", help="with --table: the published value and our difference "
                   "beside each cell")
    p.add_argument("--plot", action="store_true", help="also draw PNG figures beside the table output (AP vs "
                   "δ_RS for S4, AP per sampler for S8, AP and fps vs score threshold for S10/S11, training "
                   "curves of every run behind the table) and reference them from its Markdown file")
    return p


def _console(stderr: bool = False):
    from rich.console import Console

    probe = Console(stderr=stderr)
    # piped output: do not squeeze wide tables into 80 columns
    return probe if probe.is_terminal else Console(stderr=stderr, width=160)


def _list_axes(runs, console) -> None:
    from rich.table import Table
    from rich.text import Text

    axes = detect_axes(runs)
    t = Table(title="Settings that differ between runs", title_justify="left", header_style="bold")
    for col in ("name", "kind", "values", "note"):
        t.add_column(col, overflow="fold")
    for d in axes.details:
        style = "bold" if d.kind == "axis" else ("" if d.kind == "replicate" else "dim")
        t.add_row(*(Text(printable(x)) for x in (d.name, d.kind, ", ".join(_text(v) for v in d.values), d.note)),
                  style=style)
    if axes.details:
        console.print(t)
    else:
        console.print("No setting differs between these runs (one row per run by default).")
    console.print(f"default table axes: {_esc(', '.join(axes.axes) or '(none)')}; "
                  f"always available: {', '.join(PSEUDO_AXES)}")
    console.print(f"metrics: {_esc(', '.join(available_metrics(runs)) or '(no run has metrics.json yet)')}")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): return instead of exiting the caller
        return int(exc.code or 0)
    out, err = _console(), _console(stderr=True)
    handler = _WarningHandler(err)
    rec_log = logging.getLogger("rsdet.records")
    rec_log.addHandler(handler)
    old_propagate, rec_log.propagate = rec_log.propagate, False
    try:
        return _run(args, out, err)
    except RsdetError as exc:
        err.print(f"[red]rsdet report:[/red] {_esc(str(exc))}")
        return 2
    finally:
        rec_log.removeHandler(handler)
        rec_log.propagate = old_propagate


def _esc(text: str) -> str:
    """Text for a rich markup string: control characters made visible (``printable``), ``[`` escaped."""
    from rich.markup import escape

    return escape(printable(text))


def _unplant(*paths: Path) -> None:
    """Remove symlinks where outputs are about to be written, so that a writer that opens the path
    creates a file there instead of writing through a link someone planted (e.g. in a shared folder)."""
    for path in paths:
        if path.is_symlink():
            path.unlink()


def _planted_figures(stem: Path) -> list[Path]:
    folder = stem.parent
    prefix = f"{stem.name}_"
    found = [p for p in folder.glob(f"{prefix}*.png")] if folder.is_dir() else []
    curves = folder / "curves"
    if curves.is_symlink():
        found.append(curves)
    elif curves.is_dir():
        found += list(curves.glob(f"{prefix}*.png"))
    return found


def _run(args, out, err) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        err.print(f"[red]rsdet report:[/red] {_esc(str(root))} does not exist or is not a directory. "
                  f"{_esc(HOW_TO_MAKE_RUNS)}")
        return 2
    runs = find_runs(root)
    if not runs:
        err.print(f"[red]rsdet report:[/red] no run records under {_esc(str(root))} (a run directory holds "
                  f"run.json, or config.yaml with metrics.json). {_esc(HOW_TO_MAKE_RUNS)}")
        return 2
    counts = Counter(r.status for r in runs)
    summary = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    out.print(f"Found {len(runs)} run{'s' if len(runs) != 1 else ''} under {_esc(str(root))}: {summary}")
    if args.list_axes:
        _list_axes(runs, out)
        return 0
    if args.table:
        from rsdet.report.paper_table import report_paper_table, table_name

        stem = None if args.no_write else (Path(args.out) if args.out else root / f"table_{table_name(args.table).lower()}")
        if stem is not None:
            _unplant(*(Path(f"{stem}.{kind}") for kind in ("md", "csv", "tex")))
        try:
            paths = report_paper_table(runs, args.table, args.paper, stem, console=out)
        except OSError as exc:
            err.print(f"[red]rsdet report:[/red] could not write {_esc(str(stem))}.{{md,csv,tex}} ({_esc(str(exc))}); "
                      f"choose another place with --out PATH_STEM")
            return 1
        if args.plot:
            figs = _plots(runs, args.table, stem if stem is not None else root / f"table_{table_name(args.table).lower()}",
                          paths.get("md"), err)
            if figs is None:
                return 1
            paths.update({f"figure{i}": f.path for i, f in enumerate(figs)})
        if paths:
            out.print("wrote " + ", ".join(_esc(str(p)) for p in paths.values()))
        return 0
    table = build_table(runs, rows=_keys(args.rows), cols=_keys(args.cols), metric=args.metric,
                        filters=args.filter, raw=args.raw)
    title = f"rsdet report — {root}"
    print_table(table, out, title)
    if args.no_write:
        return 0
    stem = Path(args.out) if args.out else root / "report"
    try:
        paths = write_outputs(table, stem, title)
    except OSError as exc:
        err.print(f"[red]rsdet report:[/red] could not write {_esc(str(stem))}.{{md,csv,tex}} ({_esc(str(exc))}); "
                  f"choose another place with --out PATH_STEM")
        return 1
    if args.plot:
        figs = _plots(runs, None, stem, paths.get("md"), err)
        if figs is None:
            return 1
        paths.update({f"figure{i}": f.path for i, f in enumerate(figs)})
    out.print("wrote " + ", ".join(_esc(str(p)) for p in paths.values()))
    return 0


def _plots(runs, table, stem: Path, markdown: Path | None, err):
    """Draw the figures into the folder of ``stem`` and append their references to ``markdown``."""
    from rsdet.report.plots import figures_markdown, write_plots

    stem = Path(stem)
    try:
        _unplant(*_planted_figures(stem))
        figs = write_plots(runs, table, stem.parent, stem=stem.name)
        if markdown is not None and figs:
            md = Path(markdown)
            text = md.read_text(encoding="utf-8") if md.is_file() and not md.is_symlink() else ""
            atomic_write_text(markdown, text + "\n" + figures_markdown(figs, Path(markdown).parent))
    except OSError as exc:
        err.print(f"[red]rsdet report:[/red] could not write the figures beside {_esc(str(stem))} ({_esc(str(exc))}); "
                  f"choose another place with --out PATH_STEM")
        return None
    return figs


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
