"""Fingerprint the training numerics of every detector, to show that a refactor keeps results.

    python scripts/numerics_fingerprint.py --out before.json           # on the code before the change
    python scripts/numerics_fingerprint.py --check before.json         # after it: exit 1 on any difference

Each case runs ``rsdet train`` for a few iterations (one torch thread, fixed seed, W&B off, a few
validation images) as a user would, and records every number of its history rows (loss terms,
pos:neg ratios, learning rate) and of its metrics.json (AP, oLRP, ...), leaving out wall-clock
fields. With one thread the CPU numerics are bitwise repeatable, so ``--check`` compares exactly;
``--rtol`` loosens that for a change that reorders a float sum on purpose (say so in the commit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (name, overrides): every detector with its RS recipe and its standard loss
CASES = [
    ("faster_rcnn_rs", []),
    ("faster_rcnn_ce", ["loss=ce"]),
    ("faster_rcnn_alrp", ["loss=alrp"]),
    ("atss_rs", ["detector=atss"]),
    ("atss_focal", ["detector=atss", "loss=focal"]),
    ("paa_rs", ["detector=paa"]),
    ("cascade_rcnn_rs", ["detector=cascade_rcnn"]),
    ("mask_rcnn_rs", ["detector=mask_rcnn"]),
    ("mask_rcnn_ce", ["detector=mask_rcnn", "loss=ce"]),
    ("yolact_rs", ["detector=yolact"]),
    ("yolact_ce", ["detector=yolact", "loss=ce"]),
]
#: fields that measure time, not numerics
TIMING = ("seconds", "time", "fps", "sec_per", "_s")


def _numbers(obj, prefix=""):
    """Flatten a JSON value into {dotted key: number}, dropping timing fields."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if any(t in k for t in TIMING):
                continue
            out.update(_numbers(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = obj
    return out


def run_case(overrides: list[str], iters: int, root: Path) -> dict:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    run_dir = root / "run"
    cmd = [sys.executable, "-m", "rsdet.cli", "train", *overrides, "logger=none", f"schedule.max_iters={iters}",
           "logger.log_every=1", "eval.max_images=16", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"history": _numbers(history), "metrics": _numbers(metrics)}


def compare(a: dict, b: dict, rtol: float) -> list[str]:
    """Changed or missing numbers of ``b`` against ``a``. Keys only in ``b`` are new record fields
    (e.g. a metrics block added later), not changed numerics: ``new_keys`` counts them."""
    diffs = []
    for case in sorted(set(a) | set(b)):
        if case not in a or case not in b:
            diffs.append(f"{case}: only in {'before' if case in a else 'after'}")
            continue
        for part in ("history", "metrics"):
            x, y = a[case][part], b[case][part]
            for key in sorted(set(x) | set(y)):
                if key not in x:
                    new_keys[0] += 1
                elif key not in y:
                    diffs.append(f"{case} {part} {key}: only in before")
                elif not (x[key] == y[key] or (math.isnan(x[key]) and math.isnan(y[key]))
                          or math.isclose(x[key], y[key], rel_tol=rtol, abs_tol=rtol * 1e-3)):
                    diffs.append(f"{case} {part} {key}: {x[key]!r} -> {y[key]!r}")
    return diffs


new_keys = [0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the fingerprint to this JSON file")
    parser.add_argument("--check", type=Path, help="compare against this fingerprint; exit 1 on a difference")
    parser.add_argument("--iters", type=int, default=12, help="training iterations per case (default 12)")
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance of --check (default exact)")
    args = parser.parse_args(argv)
    only = {c for c in args.only.split(",") if c}
    result = {}
    for name, overrides in CASES:
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            result[name] = run_case(overrides, args.iters, Path(tmp))
        print(f"{name}: {len(result[name]['history'])} history numbers, "
              f"AP {result[name]['metrics'].get('bbox.AP', float('nan')):.4f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.check:
        before = json.loads(args.check.read_text())
        if only:
            before = {k: v for k, v in before.items() if k in only}
        diffs = compare(before, result, args.rtol)
        for d in diffs[:200]:
            print(d)
        print(f"{len(diffs)} differences against {args.check} ({new_keys[0]} numbers only in the new record: added fields)")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
