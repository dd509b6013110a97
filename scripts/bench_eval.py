"""How much does oLRP add to pycocotools' own evaluation? (`make bench-eval`)

Issue 4 asks that computing optimal LRP on top of COCOeval.evaluate() + accumulate() add at most
20% to their time on 5,000 images x 100 detections. This script builds a COCO-like synthetic set
(80 classes, ~7 objects per image; per image: a jittered detection for most objects plus random
false positives up to the detection budget, random scores), then times, per repeat, on a fresh
COCOeval:

    baseline  = COCOeval.evaluate() + COCOeval.accumulate()        (pycocotools itself)
    oLRP      = rsdet.evaluation.lrp.class_lrp(ev) + summarize_lrp  (on the same evaluated ev)

and prints the medians and their ratio. Loading the results (loadRes) is outside both timings.
Timings on a shared machine are noisy; use --repeats to take more medians.

    python scripts/bench_eval.py                      # 5,000 images x 100 detections, 3 repeats
    python scripts/bench_eval.py --images 500 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rsdet.evaluation.lrp import class_lrp, summarize_lrp


def synthetic(n_images: int, dets_per_image: int, n_classes: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 640, "height": 480})
        first_det = len(dets)
        n_obj = int(min(rng.poisson(7), dets_per_image))
        wh = np.exp(rng.uniform(np.log(8), np.log(400), (n_obj, 2)))
        wh = np.minimum(wh, [639, 479])
        xy = rng.uniform(0, 1, (n_obj, 2)) * ([640, 480] - wh)
        cats = rng.integers(1, n_classes + 1, n_obj)
        for (x, y), (w, h), c in zip(xy, wh, cats):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c),
                         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
                         "iscrowd": int(rng.random() < 0.01)})
            if rng.random() < 0.85:
                jx, jy = rng.normal(0, 0.1, 2) * (w, h)
                sw, sh = np.exp(rng.normal(0, 0.1, 2))
                dets.append({"image_id": i, "category_id": int(c), "score": float(rng.beta(4, 2)),
                             "bbox": [float(x + jx), float(y + jy), float(w * sw), float(h * sh)]})
        n_fp = dets_per_image - (len(dets) - first_det)
        wh = np.exp(rng.uniform(np.log(8), np.log(300), (n_fp, 2)))
        xy = rng.uniform(0, 1, (n_fp, 2)) * ([640, 480] - wh)
        cats = rng.integers(1, n_classes + 1, n_fp)
        scores = rng.beta(1.2, 5, n_fp)
        dets += [{"image_id": i, "category_id": int(c), "score": float(s),
                  "bbox": [float(x), float(y), float(w), float(h)]}
                 for (x, y), (w, h), c, s in zip(xy, wh, cats, scores)]
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    t0 = time.perf_counter()
    gt, dets = synthetic(args.images, args.dets)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
    print(f"data: {args.images} images, {len(gt['annotations'])} objects, {len(dets)} detections "
          f"({time.perf_counter() - t0:.1f} s to build and load)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(shared; expect noise)")

    base, lrp = [], []
    for r in range(args.repeats):
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            t = time.perf_counter()
            ev.evaluate()
            ev.accumulate()
            base.append(time.perf_counter() - t)
        t = time.perf_counter()
        summary = summarize_lrp(class_lrp(ev, "coco"))
        lrp.append(time.perf_counter() - t)
        print(f"repeat {r + 1}: evaluate+accumulate {base[-1]:.2f} s, oLRP {lrp[-1]:.3f} s "
              f"(oLRP = {summary['oLRP']:.4f})")

    mb, ml = statistics.median(base), statistics.median(lrp)
    print(f"median pycocotools evaluate+accumulate: {mb:.2f} s")
    print(f"median oLRP on top:                     {ml:.3f} s")
    print(f"ratio oLRP / (evaluate+accumulate):     {100 * ml / mb:.1f}% (budget: 20%)")


if __name__ == "__main__":
    main()
