"""Results tables from run records (``rsdet report``); reads run directories only, never torch models.

    from rsdet.records import find_runs
    from rsdet.report import build_table, to_markdown
    table = build_table(find_runs("multirun/2026-01-05/10-00-00"), rows=["loss"],
                        cols=["sampler.rpn", "sampler.rcnn"], metric="AP")
    print(to_markdown(table))

Supplementary tables (``--table sN``): ``paper_table`` (layouts filled from runs) with ``paper`` (the
published numbers) and ``run_data`` (first-epoch history, threshold sweeps, sampler ratios); figures
(``--plot``): ``plots``; paper-mini: ``mini`` (plan, document), ``findings`` (verdict rules), ``tuning``
(the baselines' lr grid).
"""

from rsdet.report.axes import Axes, AxisInfo, detect_axes
from rsdet.report.render import print_table, to_csv, to_latex, to_markdown, to_rich, write_outputs
from rsdet.report.table import Cell, Column, ReportTable, build_table

__all__ = ["Axes", "AxisInfo", "Cell", "Column", "ReportTable", "build_table", "detect_axes", "print_table",
           "to_csv", "to_latex", "to_markdown", "to_rich", "write_outputs"]
