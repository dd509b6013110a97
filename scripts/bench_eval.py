"""How fast is rsdet's evaluation, against the official evaluators? (`make bench-eval`)

Default (issue 21, "evaluation that keeps up"): the LVIS protocol on the real LVIS v0.5 val
annotations of 100 images (``shared/data/lvis_v0.5_val_100.json`` beside the repository, else the
committed copy ``tests/evaluation/data/lvis_v0.5_val_100.json`` with the same images, objects and
federated lists) and 300 noisy detections per image (:func:`lvis_detections`). Timed, in one
process, repetitions interleaved (official, fast, official, fast, ...) so that a change of load hits
both alike:

    lvis-api           lvis.LVISResults + LVISEval.run() (AP only), inputs copied outside the clock
    rsdet official     rsdet.evaluation.evaluate(backend="official"): checks, lvis-api, oLRP
    rsdet fast         evaluate(backend="fast"): checks, AP and oLRP from one vectorised matching
    sweep fast         threshold_sweep over the 7 thresholds of Table S11 (backend="fast")
    sweep official     the same with backend="official" (only with --official-sweep: 7 evaluations)

It prints the medians and the ratios to lvis-api (targets: fast <= 0.3x, 7-threshold sweep <= 3x)
and checks, outside the clock, that the fast numbers equal the official ones: every metric and
per-class entry of one evaluation, and every sweep row against an official evaluation of the
detections kept at that threshold. The machine's load average is printed before and after.

``--coco`` runs the same comparison on the COCO protocol (pycocotools' loadRes + COCOeval
evaluate/accumulate/summarize as the reference) with the synthetic COCO-like set below.
``--olrp-coco`` instead measures what oLRP adds to pycocotools' own COCOeval.evaluate() +
accumulate() on a COCO-like synthetic set (5,000 images x 100 detections, 80 classes).

    python scripts/bench_eval.py                         # LVIS, 5 repetitions
    python scripts/bench_eval.py --repeats 1 --images 20 # quick look
    python scripts/bench_eval.py --coco                  # COCO protocol, 1,000 synthetic images x 100
    python scripts/bench_eval.py --olrp-coco             # oLRP on top of COCOeval
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

SHARED_LVIS = REPO.parent / "shared" / "data" / "lvis_v0.5_val_100.json"
FIXTURE_LVIS = REPO / "tests" / "evaluation" / "data" / "lvis_v0.5_val_100.json"
#: Table S11's test score thresholds
THRESHOLDS = (1e-4, 1e-3, 1e-2, 0.1, 0.4, 0.6, 0.8)


# ---------------------------------------------------------------------------------------- data
def lvis_detections(gt: dict, per_image: int = 300, seed: int = 0) -> list[dict]:
    """``per_image`` noisy detections on each image of an LVIS-format ``gt``.

    Per object 1-3 jittered copies (the first close, the others looser: true positives,
    duplicates, poor localisations), the rest random boxes, 70 % of them in a category the image
    annotates, lists as negative or as not exhaustively annotated, 30 % in any category (most of
    those the federated rules drop). Scores uniform with three decimals (many ties), lower for the
    random boxes; coordinates with two decimals."""
    rng = np.random.default_rng(seed)
    by_img: dict[int, list] = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    cat_ids = np.array([c["id"] for c in gt["categories"]])
    dets = []
    for img in gt["images"]:
        width, height = img["width"], img["height"]
        out = []
        anns = by_img.get(img["id"], [])
        for a in anns:
            x, y, w, h = a["bbox"]
            for k in range(int(rng.integers(1, 4))):
                s = rng.normal(0, 0.15 if k else 0.06, 4)
                out.append((a["category_id"], [x + s[0] * w, y + s[1] * h, w * np.exp(s[2]),
                                               h * np.exp(s[3])], rng.random()))
        pool = (sorted({a["category_id"] for a in anns}) + list(img.get("neg_category_ids", []))
                + list(img.get("not_exhaustive_category_ids", [])))
        while len(out) < per_image:
            cat = int(rng.choice(pool)) if pool and rng.random() < 0.7 else int(rng.choice(cat_ids))
            w, h = rng.uniform(4, width / 2), rng.uniform(4, height / 2)
            out.append((cat, [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h],
                        rng.random() * 0.7))
        for cat, box, score in out[:per_image]:
            dets.append({"image_id": img["id"], "category_id": int(cat),
                         "bbox": [round(float(v), 2) for v in box], "score": round(float(score), 3)})
    return dets


def lvis_subset(gt: dict, n_images: int) -> dict:
    """The first ``n_images`` images of ``gt`` with their annotations (all categories kept)."""
    if n_images >= len(gt["images"]):
        return gt
    images = gt["images"][:n_images]
    keep = {im["id"] for im in images}
    return {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}


# ---------------------------------------------------------------------------------------- LVIS
def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _load() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def bench_speed(args) -> None:
    """The fast backend against the official evaluator (LVIS, or COCO with --coco)."""
    from pycocotools.cocoeval import COCOeval

    from rsdet.evaluation import _backends as backends
    from rsdet.evaluation import evaluate, threshold_sweep
    from rsdet.evaluation.io import load_ground_truth, validate_detections

    protocol = "coco" if args.coco else "lvis"
    if protocol == "lvis":
        path = Path(args.gt) if args.gt else (SHARED_LVIS if SHARED_LVIS.is_file() else FIXTURE_LVIS)
        gt = lvis_subset(json.loads(path.read_text()), args.images)
        dets = lvis_detections(gt, args.dets, seed=0)
        lvis = backends.import_lvis()  # the one-off import (cv2, matplotlib) stays outside the clock
        name, ref = path.name, "lvis-api"
    else:
        gt, dets = synthetic(args.images, args.dets)
        name, ref = "synthetic COCO-like set", "pycocotools"
    dataset, _ = load_ground_truth(gt, protocol)
    checked = validate_detections(dets, dataset, "bench", "bbox")
    print(f"data: {name}, {len(gt['images'])} images, {len(gt['annotations'])} objects, "
          f"{len(gt['categories'])} categories, {len(dets)} detections ({args.dets} per image)")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {_load()} (before)")

    def official_api() -> float:
        """The official evaluator as its README calls it (AP only); input copies off the clock."""
        fresh = {**dataset, "annotations": [dict(a) for a in dataset["annotations"]]}
        records = [dict(d) for d in checked]
        with backends.quiet():
            if protocol == "lvis":
                gt_idx = backends.lvis_gt(fresh)
                t = time.perf_counter()
                lvis.LVISEval(gt_idx, lvis.LVISResults(gt_idx, records, max_dets=300), "bbox").run()
            else:
                gt_idx = backends.coco_gt(fresh)
                t = time.perf_counter()
                ev = COCOeval(gt_idx, gt_idx.loadRes(records), "bbox")
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            return time.perf_counter() - t

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def run_eval(backend):
        return lambda: timed(lambda: evaluate(gt, dets, protocol=protocol, backend=backend))

    def run_sweep(backend):
        return lambda: timed(lambda: threshold_sweep(gt, dets, THRESHOLDS, protocol=protocol, backend=backend))

    runs = {ref: official_api, "rsdet official": run_eval("official"), "rsdet fast": run_eval("fast"),
            "sweep fast": run_sweep("fast")}
    if args.official_sweep:
        runs["sweep official"] = run_sweep("official")
    runs["rsdet fast"]()  # warm-up: first-call costs (imports) are not the evaluation's
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for name, fn in runs.items():  # interleaved: official, fast, official, fast, ...
            times[name].append(fn())
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()), flush=True)
    print(f"machine: {_load()} (after)")

    base = _median(times[ref])
    targets = {"rsdet fast": 0.3, "sweep fast": 3.0} if protocol == "lvis" else {}
    print(f"\n| {len(gt['images'])} images x {args.dets} detections, {protocol.upper()} protocol | median (s) | "
          f"min-max (s) | / {ref} | target |")
    print("|---|--:|--:|--:|--:|")
    for name, ts in times.items():
        ratio = _median(ts) / base
        print(f"| {name} | {_median(ts):.3f} | {min(ts):.3f}-{max(ts):.3f} | {ratio:.3f}x | "
              f"{'<= %gx' % targets[name] if name in targets else ''} |")

    if args.skip_check:
        return
    print("\nchecking the fast numbers against the official ones ...", flush=True)
    fast = evaluate(gt, dets, protocol=protocol, per_class=True, backend="fast")
    official = evaluate(gt, dets, protocol=protocol, per_class=True, backend="official")
    same = fast == official
    rows = threshold_sweep(gt, dets, THRESHOLDS, protocol=protocol, backend="fast")
    for row in rows:
        kept = [d for d in dets if d["score"] > row["threshold"]]
        same &= row["metrics"] == evaluate(gt, kept, protocol=protocol, backend="official")
    print(f"numbers identical (every metric, per-class entry and sweep row): {'yes' if same else 'NO'}")
    print(", ".join(f"{k} {100 * fast[k]:.2f}" for k in ("AP", "APr", "AR300", "AR100", "oLRP") if k in fast))
    if not same:
        sys.exit(1)


# ---------------------------------------------------------------------------------------- oLRP on COCO
def synthetic(n_images: int, dets_per_image: int, n_classes: int = 80, seed: int = 0):
    """COCO-like ground truth (~7 objects per image, 1 % crowd) and detections: a jittered copy of
    most objects plus random false positives up to the detection budget, random scores."""
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


def bench_olrp_coco(args) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from rsdet.evaluation.lrp import class_lrp, summarize_lrp

    t0 = time.perf_counter()
    gt, dets = synthetic(args.images, args.dets)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
    print(f"data: {args.images} images, {len(gt['annotations'])} objects, {len(dets)} detections "
          f"({time.perf_counter() - t0:.1f} s to build and load)")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {_load()}")
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
    mb, ml = _median(base), _median(lrp)
    print(f"median pycocotools evaluate+accumulate: {mb:.2f} s")
    print(f"median oLRP on top:                     {ml:.3f} s")
    print(f"ratio oLRP / (evaluate+accumulate):     {100 * ml / mb:.1f}% (budget: 20%)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coco", action="store_true",
                    help="COCO protocol on the synthetic COCO-like set (default 1,000 images x 100) instead of LVIS")
    ap.add_argument("--olrp-coco", action="store_true", help="measure oLRP on top of COCOeval instead")
    ap.add_argument("--gt", help="LVIS-format annotation file (default: the 100-image LVIS v0.5 val subset)")
    ap.add_argument("--images", type=int, default=None,
                    help="images (LVIS: first N of the file, default all; --coco: 1000; --olrp-coco: 5000)")
    ap.add_argument("--dets", type=int, default=None, help="detections per image (LVIS 300, COCO 100)")
    ap.add_argument("--repeats", type=int, default=None, help="repetitions (LVIS 5, COCO 3)")
    ap.add_argument("--official-sweep", action="store_true",
                    help="also time the 7-threshold sweep with the official backend (7 evaluations)")
    ap.add_argument("--skip-check", action="store_true", help="do not check that the numbers are identical")
    args = ap.parse_args(argv)
    if args.olrp_coco:
        args.images, args.dets = args.images or 5000, args.dets or 100
        args.repeats = args.repeats or 3
        bench_olrp_coco(args)
    elif args.coco:
        args.images, args.dets = args.images or 1000, args.dets or 100
        args.repeats = args.repeats or 5
        bench_speed(args)
    else:
        args.images, args.dets = args.images or 10 ** 9, args.dets or 300
        args.repeats = args.repeats or 5
        bench_speed(args)


if __name__ == "__main__":
    main()
