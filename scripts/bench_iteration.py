"""Training-iteration time of each detector with its standard loss vs Rank & Sort (supplementary Table S9).

    python scripts/bench_iteration.py                       # CPU presets on the shapes data, every detector
    python scripts/bench_iteration.py --detectors atss --iters 20
    python scripts/bench_iteration.py --detectors solov2_light   # SOLOv2-light: focal vs RS (CPU preset)
    python scripts/bench_iteration.py --update-docs         # rewrite the table in docs/detectors.md
    python scripts/bench_iteration.py -- schedule=1x device=cuda   # extra Hydra overrides after `--`

For each detector both recipes are built from the same seed and trained on the *same* batches (the
first ``--batches`` batches of the training split, cycled), in one process; the figure is the median
seconds per iteration (forward, backward, optimiser step) after ``--warmup`` iterations, and the
ratio RS / standard. On CUDA the clock is read after ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

from _machine import cpu_model

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- bench-iteration:begin -->", "<!-- bench-iteration:end -->"
STANDARD = {"faster_rcnn": "ce", "cascade_rcnn": "ce", "mask_rcnn": "ce", "atss": "focal", "paa": "focal",
            "yolact": "ce", "solov2": "focal", "solov2_light": "focal", "solov2_r101": "focal"}
PAPER = {"faster_rcnn": (0.42, 0.82), "cascade_rcnn": (0.51, 2.26), "mask_rcnn": (0.64, 1.04), "atss": (0.44, 0.70),
         "paa": (0.57, 0.99), "yolact": (0.57, 0.59), "solov2_light": (0.64, 0.90)}  # Table S9, s/iter (std, RS)


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from rsdet.train_cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def _time_recipe(cfg, batches, device, iters: int, warmup: int) -> list[float]:
    from rsdet.engine.schedule import build_optimizer, make_plan
    from rsdet.models import build_detector

    torch.manual_seed(int(cfg.seed))
    model = build_detector(cfg, 6 if cfg.dataset.name == "shapes" else cfg.dataset.num_classes).to(device).train()
    plan = make_plan(cfg.schedule, cfg.loss, 800)
    optimizer = build_optimizer(model, cfg.schedule, plan)
    times = []
    for i in range(warmup + iters):
        images, targets = batches[i % len(batches)]
        images = [im.to(device) for im in images]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        terms, _ = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default="faster_rcnn,cascade_rcnn,mask_rcnn,atss,paa,solov2_light")
    parser.add_argument("--iters", type=int, default=15, help="timed iterations per recipe")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, default=5, help="distinct batches, cycled")
    parser.add_argument("--update-docs", action="store_true", help="rewrite the table in docs/detectors.md")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (both recipes)")
    args = parser.parse_args(argv)

    from rsdet.data.build import build_dataset
    from rsdet.data.coco_dataset import collate_fn
    from rsdet.engine.inference import pick_device

    rows = []
    for det in args.detectors.split(","):
        base = _compose([f"detector={det}", *args.overrides])
        device = pick_device(base.device)
        ds = build_dataset(base.dataset, "train", train=True)
        bs = int(base.schedule.batch_size)
        batches = [collate_fn([ds[(b * bs + j) % len(ds)] for j in range(bs)]) for b in range(args.batches)]
        medians = {}
        for loss in (STANDARD[det], "rs"):
            cfg = _compose([f"detector={det}", f"loss={loss}", *args.overrides])
            medians[loss] = statistics.median(_time_recipe(cfg, batches, device, args.iters, args.warmup))
            print(f"{det:12s} loss={loss:6s} {medians[loss]:.3f} s/iter", flush=True)
        std, rs = medians[STANDARD[det]], medians["rs"]
        paper = PAPER.get(det)
        rows.append(f"| {det} | {STANDARD[det]} | {std:.3f} | {rs:.3f} | {rs / std:.2f}x | "
                    + (f"{paper[0]:.2f} / {paper[1]:.2f} = {paper[1] / paper[0]:.2f}x |" if paper else "— |"))

    where = (torch.cuda.get_device_name(0) if device.type == "cuda"
             else f"{os.cpu_count()}-core {platform.machine()} CPU ({cpu_model()}), {torch.get_num_threads()} threads")
    lines = [
        f"Measured by `python scripts/bench_iteration.py{' ' + ' '.join(args.overrides) if args.overrides else ''}` "
        f"on {time.strftime('%Y-%m-%d')}, {where}; batch {bs}, median of {args.iters} iterations after "
        f"{args.warmup} warm-up, same batches for both recipes:",
        "",
        "| detector | standard loss | standard s/iter | RS s/iter | RS / standard | paper (Table S9, GPU) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    block = "\n".join(lines)
    print(block)
    if args.update_docs:
        doc = ROOT / "docs" / "detectors.md"
        text = doc.read_text()
        if BEGIN not in text:
            raise SystemExit(f"{doc} has no {BEGIN} ... {END} block")
        doc.write_text(re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), f"{BEGIN}\n{block}\n{END}", text, flags=re.S))
        print(f"{doc} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
