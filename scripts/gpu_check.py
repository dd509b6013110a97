"""One short GPU check for sessions that have a CUDA machine (never part of the test suite).

    python scripts/gpu_check.py                 # ~5 minutes on one GPU
    python scripts/gpu_check.py --quick         # ~2 minutes: fewer sizes and iterations

1. the CUDA loss tests (``pytest tests/losses -k cuda``): CUDA results equal the CPU ones;
2. the loss benchmark on the GPU (``scripts/bench_losses.py --device cuda``): RS / AP / aLRP
   forward+backward against sigmoid focal loss (the issue's target: RS ≤ 2× focal at N = 1e6, P = 1000);
3. a few AMP training iterations of every registered detector (fp16 with GradScaler, and bf16 on
   Faster R-CNN) through ``rsdet train``, then a short evaluation: status, s/iter, final loss;
4. the training iteration RS vs the standard loss per detector (``scripts/bench_iteration.py``,
   timed with ``torch.cuda.synchronize()``; target RS-Faster R-CNN ≤ 1.3× CE);
5. with 2 or more GPUs, a 2-process DDP run (``distributed.nproc=2``, NCCL).

Prints one table; exits non-zero if a step fails. Every step runs in its own process, so one that
crashes the CUDA context does not take the others with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _run(cmd: list[str], cwd: Path, timeout: int) -> tuple[int, str, float]:
    start = time.perf_counter()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = 124, f"timed out after {timeout} s\n{exc.stdout or ''}"
    return code, out, time.perf_counter() - start


def _tail(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-n:])[-300:]


def cuda_loss_tests(rows: list) -> int:
    code, out, secs = _run([sys.executable, "-m", "pytest", "-q", "tests/losses", "-k", "cuda"], ROOT, 600)
    summary = next((line for line in reversed(out.splitlines()) if "passed" in line or "failed" in line), _tail(out))
    rows.append(("CUDA loss tests", "ok" if code == 0 else f"FAIL ({code})", summary.strip("= "), f"{secs:.0f}s"))
    return code


def loss_benchmark(rows: list, quick: bool) -> int:
    sizes = "1e5:100,1e6:1000" if quick else "1e5:100,1e6:1000,4e6:5000"
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "bench.json"
        code, out, secs = _run([sys.executable, "scripts/bench_losses.py", "--device", "cuda", "--sizes", sizes,
                                "--no-loop", "--json", str(out_json)], ROOT, 900)
        results = json.loads(out_json.read_text()) if out_json.is_file() else []
    if code or not results:
        rows.append(("loss benchmark (GPU)", f"FAIL ({code})", _tail(out), f"{secs:.0f}s"))
        return code or 1
    worst = 0
    for r in results:
        ratios = {k.split("/")[0]: v for k, v in r.items() if k.endswith("/focal")}
        target = r["N"] == 1_000_000 and r["P"] == 1000
        verdict = "ok"
        if target and ratios.get("rs", 0) > 2.0:
            verdict, worst = "ABOVE TARGET (RS ≤ 2× focal)", 1
        text = f"focal {r['focal_ms']:.1f} ms; " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items())
        rows.append((f"loss fwd+bwd N={r['N']:.0e} P={r['P']}", verdict, text, ""))
    return worst


def _train(detector: str, amp: str, iters: int, workdir: Path, extra: list[str] | None = None):
    from rsdet.records import find_runs

    out_dir = workdir / f"{detector}-{amp}"
    code, out, secs = _run([sys.executable, "-m", "rsdet", "train", f"detector={detector}", "device=cuda",
                            f"amp={amp}", "logger=none", f"logger.log_every={max(iters // 3, 1)}",
                            f"schedule.max_iters={iters}", "eval.max_images=50",
                            f"hydra.run.dir={out_dir}", *(extra or [])], ROOT, 900)
    runs = find_runs(out_dir) if out_dir.is_dir() else []
    return code, out, secs, (runs[0] if runs else None)


def amp_training(rows: list, quick: bool, workdir: Path) -> int:
    from rsdet.models.build import available_detectors

    iters = 15 if quick else 40
    worst = 0
    jobs = [(name, "fp16") for name in available_detectors()] + [("faster_rcnn", "bf16")]
    for detector, amp in jobs:
        code, out, secs, run = _train(detector, amp, iters, workdir)
        if code or run is None or run.status != "completed":
            rows.append((f"train {detector} amp={amp}", f"FAIL ({code})", _tail(out), f"{secs:.0f}s"))
            worst = 1
            continue
        history = run.read_history()
        last = history[-1] if history else {}
        ap = (run.metrics or {}).get("bbox", {}).get("AP")
        rows.append((f"train {detector} amp={amp}", "ok",
                     f"{iters} it, {last.get('sec_per_iter', float('nan')):.3f} s/it, loss {last.get('loss/total', float('nan')):.3f}, "
                     f"AP {ap if ap is None else round(100 * ap, 1)}, amp_dtype {run.info.get('amp_dtype')}", f"{secs:.0f}s"))
    return worst


def iteration_benchmark(rows: list, quick: bool) -> int:
    iters = "8" if quick else "15"
    code, out, secs = _run([sys.executable, "scripts/bench_iteration.py", "--iters", iters, "--", "device=cuda"],
                           ROOT, 900)
    found = re.findall(r"^(\w+)\s+loss=(\w+)\s+([\d.]+) s/iter", out, flags=re.M)
    if code or not found:
        rows.append(("iteration RS vs standard", f"FAIL ({code})", _tail(out), f"{secs:.0f}s"))
        return code or 1
    per: dict[str, dict[str, float]] = {}
    for det, loss, t in found:
        per.setdefault(det, {})[loss] = float(t)
    worst = 0
    for det, times in per.items():
        std = next(v for k, v in times.items() if k != "rs")
        ratio = times["rs"] / std
        verdict = "ok"
        if det == "faster_rcnn" and ratio > 1.3:
            verdict, worst = "ABOVE TARGET (≤ 1.3× CE)", 1
        rows.append((f"iteration {det} RS / standard", verdict,
                     f"{times['rs']:.3f} / {std:.3f} s/it = {ratio:.2f}× (paper Table S9: 1.95× on R-CNN)", ""))
    return worst


def ddp_run(rows: list, workdir: Path) -> int:
    import torch

    if torch.cuda.device_count() < 2:
        rows.append(("DDP 2 processes (NCCL)", "skipped", "fewer than 2 GPUs", ""))
        return 0
    code, out, secs, run = _train("faster_rcnn", "fp16", 20, workdir, ["distributed.nproc=2", "schedule.batch_size=8"])
    ok = code == 0 and run is not None and run.status == "completed" and run.info.get("world_size") == 2
    rows.append(("DDP 2 processes (NCCL)", "ok" if ok else f"FAIL ({code})",
                 f"world_size {run.info.get('world_size') if run else '?'}" if ok else _tail(out), f"{secs:.0f}s"))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and iterations (~2 minutes)")
    parser.add_argument("--skip", default="", help="comma list of steps to skip: tests,bench,train,iteration,ddp")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    skip = set(filter(None, args.skip.split(",")))
    rows: list[tuple[str, str, str, str]] = []
    codes = []
    with tempfile.TemporaryDirectory(prefix="rsdet-gpu-check-") as tmp:
        work = Path(tmp)
        steps = [("tests", lambda: cuda_loss_tests(rows)), ("bench", lambda: loss_benchmark(rows, args.quick)),
                 ("train", lambda: amp_training(rows, args.quick, work)),
                 ("iteration", lambda: iteration_benchmark(rows, args.quick)), ("ddp", lambda: ddp_run(rows, work))]
        for name, step in steps:
            if name not in skip:
                codes.append(step())
    print(f"\nGPU check on {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible), torch {torch.__version__}\n")
    print("| check | result | figures | wall |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
