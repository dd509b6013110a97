#!/usr/bin/env python
"""Benchmark: RS / AP / aLRP Loss (rsdet.losses) vs torchvision sigmoid focal loss vs a naive loop.

Times forward + backward in one process on the same tensors, medians over interleaved repeats
(each repeat runs every loss once, so machine noise hits all of them alike).  On CUDA each call
is timed with a pair of ``torch.cuda.Event``s (device time between the events; the host waits
once per repeat), on the CPU with ``time.perf_counter`` (or, ``--timer thread``, the calling
thread's CPU time: robust when other processes share the cores).  The naive loop is
the official algorithm (a Python loop over positives, vectorised over negatives, float32); where
running it fully is too slow it is timed on the first K positives and extrapolated linearly
(marked ``~``).  Peak extra memory of one forward + backward is measured in a fresh subprocess:
on CPU the peak resident set (VmHWM, reset through /proc/self/clear_refs once the inputs exist)
minus the resident set at that moment; on CUDA ``torch.cuda.max_memory_allocated``.  The
focal-loss column is measured the same way, for comparison.

Every grid point is timed with each thread setting of ``--threads`` (default ``1,default``:
one torch thread, then torch's default), in the same process; the ratios to focal loss are
taken within one setting.  The ranking losses' CPU kernels use torch's thread count
(docs/losses.md, "Threads and determinism").

Examples:
    python scripts/bench_losses.py                      # --grid target: N in {1e5,1e6,4e6} x P in {100,1000,5000}
    python scripts/bench_losses.py --grid quick         # two small cases, few repeats (= --quick)
    python scripts/bench_losses.py --sizes 1e6:1000 --repeats 15
    python scripts/bench_losses.py --no-loop --no-memory --threads 1   # ratios only, fast
    python scripts/bench_losses.py --no-loop --no-memory --threads 1 --timer thread   # shared box
    python scripts/bench_losses.py --no-loop --no-memory --threads 1 --losses rs --kernels torch,numba
    python scripts/bench_losses.py --no-loop --no-memory --inputs wide   # issue 21's inputs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from rsdet.losses import alrp_loss, ap_loss, rank_sort_loss  # noqa: E402
from rsdet.losses._kernel import ENV as KERNEL_ENV  # noqa: E402
from _machine import cpu_model  # noqa: E402

LOSSES = ("focal", "rs", "ap", "alrp")
GRIDS = {
    # The target grid: RS forward+backward <= 1.5x torchvision sigmoid focal loss.
    "target": [(int(n), p) for n in (1e5, 1e6, 4e6) for p in (100, 1000, 5000)],
    "quick": [(100_000, 100), (1_000_000, 1000)],
}
DEFAULT_SIZES = GRIDS["target"]
TARGET_RATIO = 1.0      # issue 21: RS, AP, aLRP fwd+bwd <= 1.0x sigmoid focal, any thread count
# (scale, shift) of the logits and the positives' extra shift.
INPUTS = {"early": (1.5, -4.0, 2.0), "wide": (2.0, 0.0, 1.0)}


def make_inputs(n: int, p: int, device: str, seed: int = 0, kind: str = "early"):
    """``early`` (default): early-training-like scores, negatives ~ N(-4, 1.5), positives
    ~ N(-2, 1.5) — nearly every negative is "relevant" (the loop's worst case); ``wide``: the
    inputs of issue 21, logits ~ N(0, 2^2), positives shifted by +1.  IoU labels U(0.1, 1),
    1% ignored."""
    scale, shift, pos_shift = INPUTS[kind]
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g) * scale + shift
    targets = torch.zeros(n)
    targets[torch.randperm(n, generator=g)[: n // 100]] = -1.0
    pos = torch.randperm(n, generator=g)[:p]
    logits[pos] += pos_shift
    targets[pos] = torch.rand(p, generator=g) * 0.9 + 0.1
    binary = torch.where(targets > 0, torch.ones_like(targets), targets)
    loc = torch.rand(p, generator=g) * 2.0
    return logits.to(device), targets.to(device), binary.to(device), loc.to(device)


def run_loss(name, logits, targets, binary, loc, delta=None):
    """Forward + backward of one loss; ``name@kernel`` (e.g. ``rs@torch``) runs a ranking loss
    with RSDET_LOSS_KERNEL set to that kernel for the call."""
    if "@" in name:
        name, kernel = name.split("@")
        before = os.environ.get(KERNEL_ENV)
        os.environ[KERNEL_ENV] = kernel
        try:
            return run_loss(name, logits, targets, binary, loc, delta)
        finally:
            if before is None:
                del os.environ[KERNEL_ENV]
            else:
                os.environ[KERNEL_ENV] = before
    x = logits.detach().clone().requires_grad_()
    if name == "focal":
        loss = torchvision.ops.sigmoid_focal_loss(x, binary.clamp(min=0), reduction="sum")
    elif name == "rs":
        rank, sort = rank_sort_loss(x, targets, 0.5 if delta is None else delta)
        loss = rank + sort
    elif name == "ap":
        loss = ap_loss(x, binary, 1.0 if delta is None else delta)
    else:
        loss = alrp_loss(x, binary, loc, 1.0 if delta is None else delta).cls_loss
    loss.backward()
    return x.grad


# ---------------------------------------------------------------------------------------------
# Naive loop: the official algorithm (a Python loop over positives, as in the RS/aLRP
# repositories; see docs/losses.md) — one iteration per positive, O(P * N).
# ---------------------------------------------------------------------------------------------
def _h(x, delta):
    return (x >= 0).float() if delta == 0 else torch.clamp(x / (2 * delta) + 0.5, 0, 1)


def loop_loss(name, logits, targets, binary, loc, max_pos=None, delta=None):
    """Returns (number of positives processed — all, or the first ``max_pos`` — , gradient)."""
    name = name.split("@")[0]
    delta = (0.5 if name == "rs" else 1.0) if delta is None else delta
    s = logits.detach().float()
    t = targets if name == "rs" else binary
    pos = (t > 0).nonzero().squeeze(1) if name == "rs" else (t == 1).nonzero().squeeze(1)
    sp = s[pos]
    y = t[pos].float()
    neg_mask = (t == 0) & (s >= sp.min() - delta)
    neg = neg_mask.nonzero().squeeze(1)
    sn = s[neg]
    grad = torch.zeros_like(s)
    order = torch.argsort(sp)
    count = len(order) if max_pos is None else min(max_pos, len(order))
    p_max = 0.0
    for a in order[:count].tolist():
        h = _h(sp - sp[a], delta)
        g = _h(sn - sp[a], delta)
        n_fp = g.sum()
        if name == "rs":
            rank_plus = h.sum()
            l_r = n_fp / (rank_plus + n_fp)
            target = h * (y >= y[a])
            l_s = (h * (1 - y)).sum() / rank_plus - (target * (1 - y)).sum() / target.sum()
            mis = h * (y < y[a])
            if n_fp > 1e-10:
                grad[pos[a]] -= l_r
                grad[neg] += l_r * g / n_fp
            if mis.sum() > 1e-10:
                grad[pos[a]] -= l_s
                grad[pos] += l_s * mis / mis.sum()
        else:
            h[a] = 0
            rank = 1 + h.sum() + n_fp
            if name == "ap":
                prec = float((1 + h.sum()) / rank)
                scale = 1.0 if p_max <= prec else (1 - p_max) / (1 - prec)
                p_max = max(p_max, prec)
                grad[neg] += g / rank * scale
                grad[pos[a]] -= 1 - p_max
            elif n_fp > 1e-5:
                u = ((h * loc).sum() + n_fp) / rank
                grad[pos[a]] -= u
                grad[neg] += u * g / n_fp
    grad /= len(pos)
    return count, grad


# ---------------------------------------------------------------------------------------------
def median_times(fns: dict, repeats: int, sync, device: str = "cpu",
                 clock=time.perf_counter) -> dict:
    """Median seconds per call of each function, repeats interleaved across the functions (in
    an order rotated every repeat).

    CUDA: device time between two events recorded around each call (the host synchronises once
    per repeat, after all calls, so launch overhead that the GPU hides is not counted twice).
    CPU: ``clock`` around each call (``time.perf_counter``, or ``time.thread_time`` for
    ``--timer thread``).
    """
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
        sync()
    names = list(fns)
    for rep in range(repeats):
        # Rotate the order every repeat: whichever call followed focal loss (which allocates
        # and frees several N-sized buffers) took 1.4-2x its time elsewhere at N = 4e6 (one
        # thread, shared box), and in a fixed order that was always RS.
        order = names[rep % len(names):] + names[:rep % len(names)]
        if device == "cuda":
            events = {}
            for k in order:
                f = fns[k]
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                f()
                end.record()
                events[k] = (start, end)
            torch.cuda.synchronize()
            for k, (start, end) in events.items():
                times[k].append(start.elapsed_time(end) / 1e3)
            continue
        for k in order:
            start = clock()
            fns[k]()
            sync()
            times[k].append(clock() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def time_loop(name, inputs, budget_s: float, sync) -> tuple[float, bool, float | None]:
    """Loop time in seconds, whether it was extrapolated from a prefix of positives, and (for a
    full run) the max |gradient difference| between the loop and the fast implementation."""
    p = inputs[3].numel()
    probe = max(1, min(p, 5))
    start = time.perf_counter()
    loop_loss(name, *inputs, max_pos=probe)
    sync()
    t_probe = time.perf_counter() - start
    if t_probe * p / probe <= budget_s:
        start = time.perf_counter()
        _, grad = loop_loss(name, *inputs)
        sync()
        elapsed = time.perf_counter() - start
        diff = (grad - run_loss(name, *inputs)).abs().max().item()
        return elapsed, False, diff
    k = max(probe, min(p, int(budget_s / max(t_probe / probe, 1e-9))))
    start = time.perf_counter()
    loop_loss(name, *inputs, max_pos=k)
    sync()
    per = (time.perf_counter() - start) / k
    return per * p, True, None


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def measure_peak_here(name: str, n: int, p: int, device: str, kind: str = "early") -> float:
    """Run one forward+backward in THIS process and return its peak extra memory in MB.

    CPU: the process's resident set high-water mark (VmHWM) is reset after the inputs are built
    (``echo 5 > /proc/self/clear_refs``), so the peak is that of the loss alone; the baseline is
    the resident set at that moment.  Without /proc (non-Linux) the ru_maxrss growth is used,
    which under-reports if building the inputs peaked higher.  CUDA: max_memory_allocated.
    A first call on tiny inputs comes before, so that one-off costs (numba loading its compiled
    kernels: ~130 MB resident) are not counted as the loss's memory.
    """
    run_loss(name, *make_inputs(1000, 10, device, seed=1))
    inputs = make_inputs(n, p, device, kind=kind)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_loss(name, *inputs)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        base = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        run_loss(name, *inputs)
        return (_status_kb("VmHWM") - base) / 1024
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run_loss(name, *inputs)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def peak_memory_mb(name: str, n: int, p: int, device: str, kind: str = "early") -> float:
    """Peak extra memory (MB) of one forward+backward, measured in a fresh subprocess."""
    code = (f"import sys, torch; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
            f"torch.set_num_threads({torch.get_num_threads()})\n"
            "import bench_losses as b\n"
            f"print(b.measure_peak_here({name!r}, {n}, {p}, {device!r}, {kind!r}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _cpu_name() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def parse_sizes(text: str):
    sizes = []
    for item in text.split(","):
        n, p = item.split(":")
        sizes.append((int(float(n)), int(float(p))))
    return sizes


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def parse_threads(text: str) -> list[int]:
    """``1,default`` -> [1, torch's default thread count]; duplicates dropped, order kept."""
    out = []
    for item in text.split(","):
        item = item.strip()
        value = DEFAULT_THREADS if item == "default" else int(item)
        if value < 1:
            raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {item!r}")
        if value not in out:
            out.append(value)
    return out


DEFAULT_THREADS = torch.get_num_threads()     # before anything sets it


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=parse_sizes, default=None,
                    help="comma-separated N:P pairs, e.g. 1e6:1000,4e6:5000 (overrides --grid)")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="target",
                    help="target (default): N in {1e5, 1e6, 4e6} x P in {100, 1000, 5000}; "
                         "quick: 1e5:100 and 1e6:1000 with 5 repeats and a 2 s loop budget")
    ap.add_argument("--quick", action="store_true", help="same as --grid quick")
    ap.add_argument("--inputs", choices=sorted(INPUTS), default="early",
                    help="early (default): negatives N(-4, 1.5), positives N(-2, 1.5); wide: "
                         "logits N(0, 2^2), positives +1 (issue 21's inputs)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 11)")
    ap.add_argument("--loop-budget", type=float, default=None,
                    help="seconds per loop measurement before extrapolating (default 5)")
    ap.add_argument("--no-loop", action="store_true", help="skip the naive loop")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--losses", default="rs,ap,alrp", help="subset of rs,ap,alrp")
    ap.add_argument("--kernels", default=None,
                    help="comma-separated RSDET_LOSS_KERNEL values (auto, numba, torch): time "
                         "every ranking loss once per kernel, interleaved in one process, as "
                         "columns like rs@torch and rs@numba (default: one column, the "
                         "environment's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=parse_threads, default=None,
                    help="comma-separated torch CPU thread counts to time every grid point "
                         "with, 'default' = torch's default (%d here); default: 1,default. "
                         "The loop and the memory are measured with the last one"
                         % DEFAULT_THREADS)
    ap.add_argument("--timer", choices=("wall", "thread"), default="wall",
                    help="CPU only: wall = time.perf_counter (default); thread = CPU time of the "
                         "calling thread (time.thread_time), which on a shared, oversubscribed "
                         "machine leaves out the time other processes hold the core; needs "
                         "--threads 1 (all work then runs on the calling thread)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    settings = args.threads or ([1, DEFAULT_THREADS] if args.device == "cpu" else [DEFAULT_THREADS])
    if args.timer == "thread" and (args.device != "cpu" or settings != [1]):
        ap.error("--timer thread measures the calling thread only: use it with --threads 1 on "
                 "the CPU")

    if args.quick:
        args.grid = "quick"
    args.quick = args.grid == "quick"
    sizes = args.sizes or GRIDS[args.grid]
    repeats = args.repeats or (5 if args.quick else 11)
    budget = args.loop_budget or (2.0 if args.quick else 5.0)
    ranking = [x for x in args.losses.split(",") if x]
    if args.kernels:
        ranking = [f"{k}@{kern}" for k in ranking for kern in args.kernels.split(",") if kern]
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    where = torch.cuda.get_device_name() if args.device == "cuda" else _cpu_name()
    clock = time.thread_time if args.timer == "thread" else time.perf_counter
    timer = ("torch.cuda.Event" if args.device == "cuda"
             else "thread_time" if args.timer == "thread" else "perf_counter")
    print(f"device={args.device} ({where}) threads={','.join(map(str, settings))} "
          f"torch={torch.__version__} repeats={repeats} timer={timer} inputs={args.inputs} "
          f"(medians, ms, forward+backward)")
    if args.device == "cpu" and hasattr(os, "getloadavg"):
        print("load average at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))

    rows = []
    for n, p in sizes:
        inputs = make_inputs(n, p, args.device, kind=args.inputs)
        fns = {k: (lambda k=k: run_loss(k, *inputs)) for k in ["focal", *ranking]}
        for th in settings:
            torch.set_num_threads(th)
            med = median_times(fns, repeats, sync, args.device, clock)
            row = {"N": n, "P": p, "threads": th, **{f"{k}_ms": med[k] * 1e3 for k in med}}
            for k in ranking:
                row[f"{k}/focal"] = med[k] / med["focal"]
            if th == settings[-1]:
                measure_extras(row, ranking, inputs, args, budget, sync, n, p)
            rows.append(row)
            print_row(row, ranking, args)
            sys.stdout.flush()
    torch.set_num_threads(DEFAULT_THREADS)
    for th in settings:
        print_table([r for r in rows if r["threads"] == th], ranking, args, th, th == settings[-1])
    for th in settings:
        mine = [r for r in rows if r["threads"] == th]
        for k in ranking:
            worst = max(mine, key=lambda r: r[f"{k}/focal"])
            verdict = "within" if worst[f"{k}/focal"] <= TARGET_RATIO else "ABOVE"
            print(f"threads={th} {k}: worst {k}/focal = {worst[f'{k}/focal']:.2f} at "
                  f"N={worst['N']:.0e} P={worst['P']} ({verdict} the {TARGET_RATIO}x target)")
    if args.device == "cpu" and hasattr(os, "getloadavg"):
        print("load average at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


def measure_extras(row, ranking, inputs, args, budget, sync, n, p):
    """The naive loop (time, gradient check) and the peak memory, once per grid point."""
    for k in ranking:
        if not args.no_loop:
            t_loop, extrap, diff = time_loop(k, inputs, budget, sync)
            row[f"{k}_loop_ms"], row[f"{k}_loop_extrapolated"] = t_loop * 1e3, extrap
            row[f"loop/{k}"] = t_loop / (row[f"{k}_ms"] / 1e3)
            if diff is not None:
                row[f"{k}_loop_max_grad_diff"] = diff
    if not args.no_memory:
        for k in ["focal", *ranking]:
            row[f"{k}_peak_mb"] = peak_memory_mb(k, n, p, args.device, args.inputs)


def print_row(row, ranking, args):
    parts = [f"N={row['N']:.0e} P={row['P']} threads={row['threads']}: "
             f"focal {fmt_ms(row['focal_ms'] / 1e3)}"]
    for k in ranking:
        parts.append(f"{k} {fmt_ms(row[f'{k}_ms'] / 1e3)} ({row[f'{k}/focal']:.2f}x focal)")
    print("  " + ", ".join(parts))
    checks = [f"{k} {row[f'{k}_loop_max_grad_diff']:.1e}" for k in ranking
              if f"{k}_loop_max_grad_diff" in row]
    if checks:
        print("    loop vs fast, max |grad difference|: " + ", ".join(checks))


def print_table(rows, ranking, args, threads, extras):
    head = ["N", "P", "focal"] + [f"{k}" for k in ranking] + [f"{k}/focal" for k in ranking]
    loop = extras and not args.no_loop
    memory = extras and not args.no_memory
    if loop:
        head += [f"{k} loop" for k in ranking] + [f"loop/{k}" for k in ranking]
    if memory:
        head += ["focal MB"] + [f"{k} MB" for k in ranking]
    print(f"\nthreads = {threads}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [f"{r['N']:.0e}".replace("e+0", "e"), str(r["P"]), fmt_ms(r["focal_ms"] / 1e3)]
        cells += [fmt_ms(r[f"{k}_ms"] / 1e3) for k in ranking]
        cells += [f"{r[f'{k}/focal']:.2f}" for k in ranking]
        if loop:
            cells += [("~" if r[f"{k}_loop_extrapolated"] else "") + fmt_ms(r[f"{k}_loop_ms"] / 1e3)
                      for k in ranking]
            cells += [f"{r[f'loop/{k}']:.0f}" for k in ranking]
        if memory:
            cells += [f"{r['focal_peak_mb']:.0f}"] + [f"{r[f'{k}_peak_mb']:.0f}" for k in ranking]
        print("| " + " | ".join(cells) + " |")
    if loop or memory:
        print("\n(~ = loop timed on a prefix of the positives and extrapolated linearly; "
              "MB = peak extra resident memory of one forward+backward)")


if __name__ == "__main__":
    sys.exit(main())
