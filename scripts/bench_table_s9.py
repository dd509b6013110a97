#!/usr/bin/env python
"""Supplementary Table S9 for paper-mini: iteration time of every detector (standard loss vs RS), and the
loss cost of the per-positive loop beside rsdet's algorithm at the same N and P.

    python scripts/bench_table_s9.py --json outputs/paper-mini/s9/bench.json
    python scripts/bench_table_s9.py --detectors faster_rcnn,atss --rounds 3 --no-loss
    python scripts/bench_table_s9.py --no-iterations --sizes 40000:150,1000000:500

Iterations: for each detector both recipes (its standard loss, rsdet/report/paper_table.py's
STANDARD_LOSS, and RS) are built from the same seed on the same batches of the CPU preset, in one
process; after ``--warmup`` iterations each, ``--rounds`` rounds alternate ``--iters`` iterations of one
recipe and of the other, and each round's median seconds per iteration (forward, backward, optimiser
step) is one replicate. Loss: on the same early-training-like inputs (scripts/bench_losses.py's
make_inputs) each round times one RS forward+backward of rsdet and of the per-positive loop (the published
algorithm, bench_losses.loop_loss); where the loop would exceed ``--loop-budget`` seconds it is timed on
its first K positives and scaled to all P (its cost per positive is the same for every positive: each
visits every relevant negative). paper-mini reads the per-round values and states each ratio as a
paired factor with its 95% CI (rsdet/report/stats.py). Run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from _machine import cpu_model  # noqa: E402


def _detectors() -> list[str]:
    """The detectors of Table S9's rows that rsdet has (conf/detector/<row>.yaml), in the table's order:
    variants without a row of their own (solov2, solov2_r101) are not timed twice."""
    from rsdet.paths import conf_dir
    from rsdet.report.paper import load_paper_tables

    rows = [r.get("config", {}).get("detector") for r in load_paper_tables()["S9"]["rows"]]
    return [d for d in rows if d and (conf_dir() / "detector" / f"{d}.yaml").is_file()]


class Recipe:
    """One detector + loss, built once, stepped on given batches."""

    def __init__(self, cfg, device):
        from rsdet.engine.schedule import build_optimizer, make_plan
        from rsdet.models import build_detector

        torch.manual_seed(int(cfg.seed))
        n_cls = cfg.dataset.get("num_classes") or 6
        self.model = build_detector(cfg, int(n_cls)).to(device).train()
        self.optimizer = build_optimizer(self.model, cfg.schedule, make_plan(cfg.schedule, cfg.loss, 800))
        self.device = device

    def step(self, batch) -> float:
        images, targets = batch
        images = [im.to(self.device) for im in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        terms, _ = self.model(images, targets)
        self.optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def bench_iterations(detectors, rounds: int, iters: int, warmup: int, n_batches: int, overrides) -> dict:
    from bench_iteration import _compose

    from rsdet.data.build import build_dataset
    from rsdet.data.coco_dataset import collate_fn
    from rsdet.engine.inference import pick_device
    from rsdet.report.paper_table import STANDARD_LOSS

    out = {}
    for det in detectors:
        standard = STANDARD_LOSS.get(det, "ce")
        base = _compose([f"detector={det}", *overrides])
        device = pick_device(base.device)
        ds = build_dataset(base.dataset, "train", train=True)
        bs = int(base.schedule.batch_size)
        batches = [collate_fn([ds[(b * bs + j) % len(ds)] for j in range(bs)]) for b in range(n_batches)]
        recipes = {kind: Recipe(_compose([f"detector={det}", f"loss={loss}", *overrides]), device)
                   for kind, loss in (("standard", standard), ("rs", "rs"))}
        for r in recipes.values():
            for i in range(warmup):
                r.step(batches[i % len(batches)])
        per_round = {"standard": [], "rs": []}
        k = 0
        for _ in range(rounds):
            for kind, r in recipes.items():
                times = [r.step(batches[(k + i) % len(batches)]) for i in range(iters)]
                per_round[kind].append(statistics.median(times))
            k += iters
        out[det] = {"standard_loss": standard, **per_round}
        print(f"{det:13s} {standard:5s} {statistics.median(per_round['standard']):.3f} s/iter, "
              f"rs {statistics.median(per_round['rs']):.3f} s/iter "
              f"(x{statistics.median(per_round['rs']) / statistics.median(per_round['standard']):.2f})", flush=True)
    return out


def bench_loss(sizes, rounds: int, budget_s: float) -> list[dict]:
    from bench_losses import loop_loss, make_inputs, run_loss

    out = []
    for n, p in sizes:
        inputs = make_inputs(n, p, "cpu")
        run_loss("rs", *inputs)  # warm-up (numba kernels load, caches fill)
        start = time.perf_counter()
        probe = max(1, min(p, 5))
        loop_loss("rs", *inputs, max_pos=probe)
        per_pos = (time.perf_counter() - start) / probe
        k = p if per_pos * p <= budget_s else max(probe, min(p, int(budget_s / max(per_pos, 1e-9))))
        fast, loop = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            run_loss("rs", *inputs)
            fast.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            loop_loss("rs", *inputs, max_pos=k)
            loop.append((time.perf_counter() - start) * 1e3 * p / k)
        out.append({"N": n, "P": p, "fast_ms": fast, "loop_ms": loop, "loop_positives": k, "extrapolated": k < p})
        ratio = statistics.median(loop) / statistics.median(fast)
        print(f"N={n} P={p}: rsdet {statistics.median(fast):.1f} ms, per-positive loop "
              f"{'~' if k < p else ''}{statistics.median(loop):.0f} ms (x{ratio:.0f})", flush=True)
    return out


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        n, p = part.split(":")
        out.append((int(float(n)), int(float(p))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", default=None, help="comma-separated (default: the detectors of Table S9's rows)")
    ap.add_argument("--rounds", type=int, default=5, help="replicates (default 5)")
    ap.add_argument("--iters", type=int, default=4, help="iterations per recipe per round (default 4)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up iterations per recipe (default 3)")
    ap.add_argument("--batches", type=int, default=5, help="distinct batches, cycled (default 5)")
    ap.add_argument("--sizes", type=_sizes, default=_sizes("40000:150,1000000:500"),
                    help="N:P pairs of the loss benchmark (default 40000:150,1000000:500)")
    ap.add_argument("--loop-budget", type=float, default=2.0, help="seconds per loop timing before it is "
                    "taken on a prefix of the positives (default 2)")
    ap.add_argument("--no-iterations", action="store_true", help="skip the detectors' iteration times")
    ap.add_argument("--no-loss", action="store_true", help="skip the loss benchmark")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides of every recipe (after `--`)")
    args = ap.parse_args(argv)
    settings = {"rounds": args.rounds, "iters": args.iters, "warmup": args.warmup,
                "loss_sizes": [list(s) for s in args.sizes], "loop_budget_s": args.loop_budget,
                "iterations": not args.no_iterations}
    if args.detectors:
        settings["detectors"] = args.detectors.split(",")
    detectors = settings.get("detectors") or _detectors()
    print(f"{os.cpu_count()}-core {platform.machine()} CPU ({cpu_model()}), {torch.get_num_threads()} threads; "
          + (f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}" if hasattr(os, "getloadavg") else ""),
          flush=True)
    result = {"settings": settings, "date": _dt.date.today().isoformat(),
              "machine": f"{os.cpu_count()}-core {platform.machine()} CPU ({cpu_model()})",
              "threads": torch.get_num_threads()}
    if not args.no_iterations:
        result["iteration"] = bench_iterations(detectors, args.rounds, args.iters, args.warmup, args.batches,
                                               args.overrides)
    if not args.no_loss:
        result["loss"] = bench_loss(args.sizes, args.rounds, args.loop_budget)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
