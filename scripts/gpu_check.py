"""One short GPU check for sessions that have a CUDA machine (never part of the test suite).

    python scripts/gpu_check.py            # ~2-3 minutes on one GPU

1. the CUDA loss tests (`tests/losses -k cuda`): CUDA results equal the CPU ones;
2. RS / AP / aLRP forward+backward at N = 4e6, P = 5000 on the GPU vs torchvision's focal loss
   (medians, ratio, peak extra GPU memory);
3. 30 iterations of the default RS-Faster R-CNN with `device=cuda` (AMP on), then evaluation.
Prints one summary; exits non-zero if a step fails.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _time(fn, repeats: int = 7) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loss_speed() -> list[str]:
    import torch
    from torchvision.ops import sigmoid_focal_loss

    from rsdet import losses as L

    n, p = 4_000_000, 5000
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(n, device="cuda", generator=g) * 1.5 - 4).requires_grad_()
    targets = torch.zeros(n, device="cuda")
    idx = torch.randperm(n, device="cuda", generator=g)[:p]
    targets[idx] = torch.rand(p, device="cuda", generator=g).clamp(min=0.1)
    binary = (targets > 0).float()

    def run(fn):
        def step():
            logits.grad = None
            fn().backward()
        return step

    rows = []
    focal = _time(run(lambda: sigmoid_focal_loss(logits, binary, reduction="sum") / p))
    for name, fn in [("rs", lambda: sum(L.rank_sort_loss(logits, targets))),
                     ("ap", lambda: L.ap_loss(logits, binary)),
                     ("alrp", lambda: L.alrp_loss(logits, binary, torch.rand(p, device="cuda")).cls_loss)]:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t = _time(run(fn))
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
        rows.append(f"{name}: {1e3 * t:.1f} ms vs focal {1e3 * focal:.1f} ms ({t / focal:.2f}x), "
                    f"peak extra {extra:.0f} MiB")
    return rows


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    summary = [f"device: {torch.cuda.get_device_name()}"]
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/losses", "-k", "cuda"], cwd=ROOT)
    summary.append(f"CUDA loss tests: exit {tests.returncode}")
    summary += loss_speed()
    train = subprocess.run([sys.executable, "-m", "rsdet.cli", "train", "device=cuda", "logger=none",
                            "schedule.max_iters=30", "eval.max_images=50"], cwd=ROOT)
    summary.append(f"30 AMP training iterations + evaluation: exit {train.returncode}")
    print("\n".join(summary))
    return max(tests.returncode, train.returncode)


if __name__ == "__main__":
    sys.exit(main())
