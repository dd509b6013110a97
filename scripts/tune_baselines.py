#!/usr/bin/env python
"""Fair baselines on the Faster R-CNN CPU preset: the same lr grid for every baseline loss, the best AP
per loss, written into docs/baselines.md's generated block (rsdet/report/tuning.py).

    python scripts/tune_baselines.py --dry-run             the grid and its estimated minutes
    python scripts/tune_baselines.py                       train what is not done, then update the doc
    python scripts/tune_baselines.py --losses ce,focal,rs --lrs 0.00025,0.0005,0.001 --seeds 2

Runs go to outputs/tune-baselines/<loss>_lr<lr>_seed<s>; completed ones are skipped (resumable).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rsdet.report import mini, tuning  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--losses", default=",".join(tuning.BASELINES), help="comma-separated losses (default: "
                   f"{','.join(tuning.BASELINES)}; add rs to put it on the same grid)")
    p.add_argument("--lrs", default=",".join(f"{x:g}" for x in tuning.LR_GRID), help="comma-separated schedule.lr values")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--root", type=Path, default=ROOT / "outputs" / "tune-baselines")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "baselines.md")
    p.add_argument("--dry-run", action="store_true", help="print the grid and its estimate, run nothing")
    p.add_argument("--train-overrides", default="", help="extra overrides for every training (smoke tests)")
    args = p.parse_args(argv)
    losses = [x.strip() for x in args.losses.split(",") if x.strip()]
    lrs = [float(x) for x in args.lrs.split(",") if x.strip()]
    items = tuning.grid_items(losses, lrs, args.seeds)
    todo = [it for it in items if not it.done(args.root)]
    print(f"lr grid: {len(items)} trainings ({len(todo)} to run), estimated {mini.estimate(todo):.1f} min on 2 cores")
    for it in items:
        print(f"  {'done' if it.done(args.root) else f'{it.minutes:.2f} min':>9}  {it.describe()}")
    if args.dry_run:
        return 0
    failures = mini.execute(items, args.root, extra=args.train_overrides.split())
    curves: dict = {}
    res = tuning.results(items, args.root, curves)
    shown = " ".join(["python scripts/tune_baselines.py", *(argv if argv is not None else sys.argv[1:])])
    setting = f"overridden: `{args.train_overrides}`" if args.train_overrides else "900 iterations"
    tuning.write_block(args.doc, tuning.block(res, lrs, shown, setting, curves))
    for loss, grid in res.items():
        choice = tuning.best(grid)
        print(f"{loss}: " + ("no finished run" if choice is None else f"best lr {choice[0]:g} ({choice[1]:.1f} AP)"))
    print(f"updated {args.doc}" + (f"; failed: {'; '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
