"""Measure the CPU demo: wall time of `rsdet train` (training + evaluation) and its box metrics.

    python scripts/demo_figures.py                  # run the default demo once, print the figures
    python scripts/demo_figures.py --update-readme  # ... and rewrite README's "Demo figures" block
    python scripts/demo_figures.py -- loss=ce       # extra Hydra overrides after `--`
    python scripts/demo_figures.py --detectors      # the default and atss, paa, cascade_rcnn, mask_rcnn, yolact, solov2
    python scripts/demo_figures.py --only atss,paa --update-readme   # re-measure some rows, keep the others

The wall time is the whole command as a user runs it (start-up, training, inference, evaluation). The
dataset is generated and the shapes-pretrained backbone of the presets that use it
(``detector.backbone.pretrained=shapes``) trained before the clock starts, so that a cold cache does
not count; the script says how long both took. Every row carries the date it was measured: `--only`
replaces its rows in README's block and leaves the others (and their dates) as they were.
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
#: the rows of ``--detectors``, in the table's order; "default" is the plain ``rsdet train``
DETECTORS = ("default", "atss", "paa", "cascade_rcnn", "mask_rcnn", "yolact", "solov2")
HEADER = ("| command | wall time (train + eval) | train | eval | iterations | AP | AP50 | AP75 | APs | APm | APl "
          "| oLRP | mask AP | measured |")
RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
_RECORD = re.compile(r"`(rsdet train[^`]*)` in `([^`]+)`")


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


def command(overrides: list[str]) -> str:
    return "rsdet train" + (" " + " ".join(overrides) if overrides else "")


def table_row(cmd: str, wall_s: float, metrics: dict, date: str) -> str:
    """One row of the block: the command, its wall time and the run's metrics.json figures."""
    bbox = metrics["bbox"]
    return (f"| `{cmd}` | {wall_s / 60:.1f} min | {metrics['train_seconds']:.0f} s "
            f"| {metrics.get('eval_seconds', 0):.0f} s | {metrics['iterations']} | {100 * bbox['AP']:.1f} "
            f"| {100 * bbox['AP50']:.1f} | {100 * bbox['AP75']:.1f} | {100 * bbox['APs']:.1f} "
            f"| {100 * bbox['APm']:.1f} | {100 * bbox['APl']:.1f} | {100 * bbox['oLRP']:.1f} "
            f"| {_mask_ap(metrics)} | {date} |")


def _row_command(row: str) -> str:
    return row.split("|")[1].strip().strip("`")


def parse_block(block: str) -> tuple[dict[str, str], dict[str, str]]:
    """The rows (by command) and run records (by command) of an existing block.

    A block of the older layout (no ``measured`` column; one date in its first line, run records in
    row order) is read too: its rows get that date.
    """
    rows, records = {}, {}
    ncols = HEADER.count("|")
    legacy = re.search(r"on (\d{4}-\d{2}-\d{2})", block.split("\n| command", 1)[0])
    for line in block.splitlines():
        if not line.startswith("| `rsdet train"):
            continue
        if line.count("|") == ncols - 1 and legacy:
            line = f"{line} {legacy.group(1)} |"
        if line.count("|") == ncols:
            rows[_row_command(line)] = line
    records = dict(_RECORD.findall(block))
    if not records and legacy:
        dirs = re.findall(r"`(outputs/[^`]+)`", block)
        if len(dirs) == len(rows):
            records = dict(zip(rows, dirs))
    return rows, {c: r for c, r in records.items() if c in rows}


def _order(cmd: str) -> tuple[int, str]:
    """Table order: the default first, then the detectors as in DETECTORS, then anything else."""
    m = re.search(r"detector=(\w+)", cmd)
    name = m.group(1) if m else "default"
    return (DETECTORS.index(name) if name in DETECTORS else len(DETECTORS), cmd)


def render_block(rows: dict[str, str], records: dict[str, str], machine: str, gen_s: float, pre_s: float) -> str:
    cmds = sorted(rows, key=_order)
    return "\n".join([
        f"Measured by `python scripts/demo_figures.py --detectors` (`--only` re-measures some rows), {machine}, "
        "one run at a time, each row on the date in its last column:",
        "",
        HEADER,
        RULE,
        *(rows[c] for c in cmds),
        "",
        f"(before the latest timed runs: dataset generation {gen_s:.0f} s, backbone pretraining {pre_s:.0f} s, "
        "both cached afterwards; run records: "
        + ", ".join(f"`{c}` in `{records[c]}`" for c in cmds if c in records) + ")",
    ])


def merge_block(old: str, new_rows: dict[str, str], new_records: dict[str, str], machine: str,
                gen_s: float, pre_s: float) -> str:
    """README's block with ``new_rows`` replacing (or joining) the rows of ``old``."""
    rows, records = parse_block(old)
    rows.update(new_rows)
    records.update(new_records)
    return render_block(rows, records, machine, gen_s, pre_s)


def _measure(overrides: list[str], env: dict, date: str) -> tuple[str, Path]:
    """Run ``rsdet train <overrides>`` once; the table row and the run directory."""
    before = {p.parent for p in (ROOT / "outputs" / "runs").glob("*/*/run.json")}
    start = time.perf_counter()
    subprocess.run([*_rsdet(), "train", *overrides], cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - start
    run = _newest_run(before)
    metrics = json.loads((run / "metrics.json").read_text())
    return table_row(command(overrides), wall, metrics, date), run


def _selected(only: str | None, detectors: bool) -> list[str]:
    if only is None:
        return list(DETECTORS) if detectors else ["default"]
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in DETECTORS]
    if unknown or not names:
        raise SystemExit(f"--only {only!r}: unknown row(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(DETECTORS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-readme", action="store_true",
                        help="put the measured rows into README.md's demo-figures block (rows not measured keep "
                             "their figures and dates)")
    parser.add_argument("--detectors", action="store_true",
                        help="measure the default and detector=atss, paa, cascade_rcnn, mask_rcnn, yolact, solov2 "
                             "(one row each)")
    parser.add_argument("--only", metavar="ROWS",
                        help=f"comma-separated rows to measure, from: {', '.join(DETECTORS)}")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for rsdet train")
    args = parser.parse_args(argv)
    names = _selected(args.only, args.detectors)

    env = dict(os.environ, WANDB_SILENT="true")
    start = time.perf_counter()
    subprocess.run([*_rsdet(), "data", "shapes"], cwd=ROOT, env=env, check=True, capture_output=True)
    gen_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([*_rsdet(), "data", "pretrain-backbone"], cwd=ROOT, env=env, check=True, capture_output=True)
    pre_s = time.perf_counter() - start

    date = time.strftime("%Y-%m-%d")
    rows, records = {}, {}
    for name in names:
        overrides = [*args.overrides] + ([] if name == "default" else [f"detector={name}"])
        row, run = _measure(overrides, env, date)
        rows[command(overrides)] = row
        records[command(overrides)] = str(run.relative_to(ROOT))

    machine = f"{os.cpu_count()}-core {platform.machine()} CPU ({cpu_model()}), torch threads default"
    if args.update_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"README.md has no {BEGIN} ... {END} block to update")
        old = text.split(BEGIN, 1)[1].split(END, 1)[0]
        block = merge_block(old, rows, records, machine, gen_s, pre_s)
        text = text.replace(BEGIN + old + END, f"{BEGIN}\n{block}\n{END}")
        readme.write_text(text)
        print(block)
        print("README.md updated")
    else:
        print(render_block(rows, records, machine, gen_s, pre_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
