#!/usr/bin/env python
"""`make paper-mini`: every key cell of the supplementary's Tables S1-S11 at CPU size, then
docs/paper-mini.md with each table in the paper's layout, its findings with paired 95% CIs, the figures,
and docs/paper-mini/{cells,findings}.csv (rsdet/report/mini.py, mini_doc.py, findings.py).

    python scripts/paper_mini.py --dry-run                 the plan: per-table minutes and every item
    python scripts/paper_mini.py                           run what is not done yet (≤ 5 h), write the document
    python scripts/paper_mini.py --only s8,s11             some tables (their runs, sweeps, benchmark)
    python scripts/paper_mini.py --quick                   2 seeds, one finding per table, half the iterations
    python scripts/paper_mini.py --smoke                   the whole path at a tiny size (1 seed, 5 iterations)
    python scripts/paper_mini.py --document-only           rewrite the document from the runs there are
    python scripts/paper_mini.py --update-readme           also list every finding's verdict in README.md

Runs go to outputs/paper-mini/<setup>/<setting>/seed<k> (quick and smoke: outputs/paper-mini-quick,
-smoke; their documents go there too); a run whose record is complete is skipped, an interrupted one
resumes from its checkpoint. Items finished by an earlier checkout with the same code are taken from the
ledger beside the document (docs/paper-mini/runs.csv, seeds.csv; committed with it), so a full run can
span working sessions; `--no-ledger` ignores it. Per-table schedules, seeds and measured costs: rsdet/report/mini_settings.py.
Run it on a quiet machine: the estimates assume 2 free cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rsdet.report import mini, mini_doc, mini_ledger  # noqa: E402
from rsdet.report.mini_cells import TABLES  # noqa: E402


def _tables(text: str) -> set[str] | None:
    out = set()
    for t in (x.strip() for x in text.split(",")):
        if not t:
            continue
        name = t.upper() if t.upper().startswith("S") else f"S{t}"
        if name not in TABLES:
            raise argparse.ArgumentTypeError(f"--only {t!r}: not a paper-mini table; tables: "
                                             f"{', '.join(t.lower() for t in TABLES)}")
        out.add(name)
    return out or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", type=float, default=None,
                   help=f"wall minutes to plan for (default {mini.DEFAULT_BUDGET:g} for the full run; items past "
                   "it are dropped from the end, i.e. the last seeds first)")
    p.add_argument("--only", type=_tables, default=None, help="comma-separated tables, e.g. s8,s11 (S7 takes "
                   "its runs from S8 and S11, S10 from S8)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--quick", action="store_true", help="2 seeds, the cells of one finding per table, half the "
                     "iterations (≤ 45 min; runs and document under outputs/paper-mini-quick)")
    how.add_argument("--smoke", action="store_true", help="every cell with 1 seed, 5 iterations on a 16-image "
                     "split: checks the pipeline end to end (outputs/paper-mini-smoke)")
    p.add_argument("--jobs", type=int, default=mini.DEFAULT_JOBS,
                   help=f"trainings at a time, each with cores/jobs threads (default {mini.DEFAULT_JOBS}; "
                   "sweeps and the benchmark always run alone because they time inference)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimate, run nothing")
    p.add_argument("--root", type=Path, default=None, help="where the runs go (default per mode)")
    p.add_argument("--doc", type=Path, default=None, help="the generated document (default per mode)")
    p.add_argument("--document-only", action="store_true", help="only (re)write the document from existing runs")
    p.add_argument("--update-readme", action="store_true", help="list every finding's verdict in README.md's "
                   "marked paper-mini block (full mode only)")
    p.add_argument("--no-ledger", action="store_true", help="neither reuse nor update the ledger beside the "
                   "document (runs.csv, seeds.csv: items finished by earlier checkouts with the same code)")
    p.add_argument("--train-overrides", default="", help="extra `rsdet train` overrides for every training, "
                   "space-separated")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    m = mini.MODES[mode]
    root = args.root or ROOT / m.root
    doc = args.doc or ROOT / m.doc
    budget = args.budget_min if args.budget_min is not None else (mini.DEFAULT_BUDGET if mode == "full" else 1e9)
    book = None if args.no_ledger else mini_ledger.Ledger.load(doc.with_suffix(""))
    kept, dropped = mini.plan(budget, args.only, mode, root=root, jobs=args.jobs, ledger=book)
    estimate = mini.estimate(kept, root, args.jobs, book)
    print(mini.format_plan(kept, dropped, budget, root, args.jobs, items=True, mode=mode, ledger=book))
    if args.dry_run:
        return 0
    summary = mini.format_plan(kept, dropped, budget, root, args.jobs, items=False, mode=mode, ledger=book)
    failures, elapsed = [], None
    if not args.document_only:
        start = time.perf_counter()
        failures = mini.execute(kept, root, extra=args.train_overrides.split(), jobs=args.jobs, ledger=book)
        elapsed = (time.perf_counter() - start) / 60
    shown = " ".join(["python scripts/paper_mini.py", *(argv if argv is not None else sys.argv[1:])])
    out = mini_doc.write_document(root, doc, shown, summary, failures, mode=mode, elapsed_min=elapsed,
                                  estimate_min=estimate if not args.document_only else None,
                                  ledger=not args.no_ledger)
    print(f"wrote {out} and {out.with_suffix('')}/cells.csv, findings.csv")
    if args.update_readme:
        if mode != "full":
            print("--update-readme: only the full run's document goes into README.md; skipped")
        else:
            mini_doc.update_readme(ROOT / "README.md", out)
            print("updated README.md's paper-mini block")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
