#!/usr/bin/env python
"""`make paper-mini`: CPU-sized Tables S8/S7, S11/S10, S4, S1/S3 (and S6 when YOLACT exists), then
docs/paper-mini.md with every table, figure and a verdict per finding (rsdet/report/mini.py).

    python scripts/paper_mini.py --dry-run                 the plan and its estimated minutes
    python scripts/paper_mini.py                           run what is not done yet, then write the document
    python scripts/paper_mini.py --only s8,s11 --budget-min 30
    python scripts/paper_mini.py --document-only           rewrite docs/paper-mini.md from the runs there are
    python scripts/paper_mini.py --update-readme           also put Table S8 and its figure into README.md

Runs go to outputs/paper-mini/<table>/<name>; a run whose record is complete is skipped, an interrupted
one resumes from its checkpoint. Run it on a quiet machine: the estimates assume 2 free cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rsdet.report import mini  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", type=float, default=mini.DEFAULT_BUDGET,
                   help=f"minutes of training and evaluation to plan for (default {mini.DEFAULT_BUDGET:g})")
    p.add_argument("--only", default="", help="comma-separated tables to run: s8,s11,s4,s1,s3,s6 (s7/s10/s9 "
                   "come from those runs)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per setting (default 2; later seeds drop first)")
    p.add_argument("--jobs", type=int, default=mini.DEFAULT_JOBS,
                   help=f"trainings at a time, each with cores/jobs threads (default {mini.DEFAULT_JOBS}; "
                   "threshold sweeps always run alone because they time inference)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimate, run nothing")
    p.add_argument("--root", type=Path, default=ROOT / "outputs" / "paper-mini", help="where the runs go")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "paper-mini.md", help="the generated document")
    p.add_argument("--document-only", action="store_true", help="only (re)write the document from existing runs")
    p.add_argument("--update-readme", action="store_true", help="put Table S8 and its figure into README.md's "
                   "marked paper-mini block")
    p.add_argument("--train-overrides", default="", help="extra `rsdet train` overrides for every training, "
                   "space-separated (a smoke test: 'schedule.max_iters=5')")
    args = p.parse_args(argv)
    only = {t.strip().lower() for t in args.only.split(",") if t.strip()} or None
    kept, dropped = mini.plan(args.budget_min, only, args.seeds, root=args.root, jobs=args.jobs)
    plan_text = mini.format_plan(kept, dropped, args.budget_min, args.root, args.jobs)
    print(plan_text)
    if not mini.yolact_available():
        print("note: no detector=yolact in this rsdet (conf/detector/yolact.yaml); Table S6 is skipped")
    if args.dry_run:
        return 0
    failures = []
    if not args.document_only:
        failures = mini.execute(kept, args.root, extra=args.train_overrides.split(), jobs=args.jobs)
    shown = " ".join(["python scripts/paper_mini.py", *(argv if argv is not None else sys.argv[1:])])
    doc = mini.write_document(args.root, args.doc, shown, plan_text, failures)
    print(f"wrote {doc}")
    if args.update_readme:
        mini.update_readme(ROOT / "README.md", doc.relative_to(ROOT) if doc.is_absolute() else doc)
        print("updated README.md's paper-mini block")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
