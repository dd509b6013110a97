"""Measure the CPU demo: wall time of `rsdet train` (training + evaluation) and its box metrics.

    python scripts/demo_figures.py                  # run the default demo once, print the figures
    python scripts/demo_figures.py --update-readme  # ... and rewrite README's "Demo figures" block
    python scripts/demo_figures.py -- loss=ce       # extra Hydra overrides after `--`
    python scripts/demo_figures.py --detectors      # the default and atss, paa, cascade_rcnn, mask_rcnn, yolact, solov2

The wall time is the whole command as a user runs it (start-up, training, inference, evaluation). The
dataset is generated and the shapes-pretrained backbone of the presets that use it
(``detector.backbone.pretrained=shapes``) trained before the clock starts, so that a cold cache does
not count; the script says how long both took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- demo-figures:begin -->", "<!-- demo-figures:end -->"


def _rsdet() -> list[str]:
    return [sys.executable, "-m", "rsdet.cli"]


def _newest_run(before: set[Path]) -> Path:
    runs = {p.parent for p in (ROOT / "outputs" / "runs").glob("*/*/run.json")}
    new = sorted(runs - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise SystemExit("no new run directory under outputs/runs; did `rsdet train` fail? See its output above.")
    return new[-1]


def _mask_ap(metrics: dict) -> str:
    """Mask AP (percent) of a mask detector's run, – for box detectors."""
    segm = metrics.get("segm")
    return f"{100 * segm['AP']:.1f}" if segm else "–"


def _measure(overrides: list[str], env: dict) -> tuple[str, Path]:
    """Run ``rsdet train <overrides>`` once; the table row and the run directory."""
    before = {p.parent for p in (ROOT / "outputs" / "runs").glob("*/*/run.json")}
    start = time.perf_counter()
    subprocess.run([*_rsdet(), "train", *overrides], cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - start
    run = _newest_run(before)
    metrics = json.loads((run / "metrics.json").read_text())
    bbox = metrics["bbox"]
    cmd = "rsdet train" + (" " + " ".join(overrides) if overrides else "")
    row = (f"| `{cmd}` | {wall / 60:.1f} min | {metrics['train_seconds']:.0f} s | {metrics.get('eval_seconds', 0):.0f} s "
           f"| {metrics['iterations']} | {100 * bbox['AP']:.1f} | {100 * bbox['AP50']:.1f} | {100 * bbox['AP75']:.1f} "
           f"| {100 * bbox['APs']:.1f} | {100 * bbox['APm']:.1f} | {100 * bbox['APl']:.1f} | {100 * bbox['oLRP']:.1f} "
           f"| {_mask_ap(metrics)} |")
    return row, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-readme", action="store_true", help="rewrite README.md's demo-figures block")
    parser.add_argument("--detectors", action="store_true",
                        help="measure the default and detector=atss, paa, cascade_rcnn, mask_rcnn, yolact, solov2 "
                             "(one row each)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for rsdet train")
    args = parser.parse_args(argv)

    env = dict(os.environ, WANDB_SILENT="true")
    start = time.perf_counter()
    subprocess.run([*_rsdet(), "data", "shapes"], cwd=ROOT, env=env, check=True, capture_output=True)
    gen_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([*_rsdet(), "data", "pretrain-backbone"], cwd=ROOT, env=env, check=True, capture_output=True)
    pre_s = time.perf_counter() - start

    runs = [args.overrides]
    if args.detectors:
        runs += [[*args.overrides, f"detector={d}"]
                 for d in ("atss", "paa", "cascade_rcnn", "mask_rcnn", "yolact", "solov2")]
    rows, dirs = [], []
    for overrides in runs:
        row, run = _measure(overrides, env)
        rows.append(row)
        dirs.append(f"`{run.relative_to(ROOT)}`")

    machine = f"{os.cpu_count()}-core {platform.machine()} CPU ({cpu_model()}), torch threads default"
    lines = [
        f"Measured by `python scripts/demo_figures.py{' --detectors' if args.detectors else ''}` on "
        f"{time.strftime('%Y-%m-%d')}, {machine}, one run at a time:",
        "",
        "| command | wall time (train + eval) | train | eval | iterations | AP | AP50 | AP75 | APs | APm | APl | oLRP "
        "| mask AP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"(before the timed runs: dataset generation {gen_s:.0f} s, backbone pretraining {pre_s:.0f} s, both "
        f"cached afterwards; run records: "
        f"{', '.join(dirs)})",
    ]
    block = "\n".join(lines)
    print(block)
    if args.update_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"README.md has no {BEGIN} ... {END} block to update")
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), f"{BEGIN}\n{block}\n{END}", text, flags=re.S)
        readme.write_text(text)
        print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
