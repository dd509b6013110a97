"""How much does drawing add to `rsdet predict`? (issue 20: drawing 100 images costs <= 10% of inference)

Loads a trained run's detector (as `rsdet predict` does) and times, in this one process, on the
first N images of its validation split (or --images DIR), per image after a warm-up:

    inference  = the detector on the image (batch 1; CUDA synchronised)
    drawing    = composing the picture: boxes, captions, masks, enlargement (rsdet.predict.cli._picture)
    png        = encoding + writing that picture as PNG (zlib level 1), in this thread
    loop       = the whole `rsdet predict` loop (read, infer, results; pictures drawn and written by
                 background threads) over the images, and the same loop with --no-draw; their
                 difference is the wall time drawing adds for a user

and prints the medians (per image), the totals over the N images and the ratios to inference.
Repeat it on a quiet machine: timings on a shared machine are noisy.

    python scripts/bench_predict.py outputs/runs/<date>/<run>            # 100 validation images
    python scripts/bench_predict.py RUN --n 20 --repeats 1               # quick look
    python scripts/bench_predict.py RUN --images photos/ --device cuda
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402


def _images(predictor, folder: Path | None, n: int) -> list[Path]:
    from rsdet.data.build import dataset_paths
    from rsdet.predict.images import collect_images

    if folder is None:
        folder, _ = dataset_paths(predictor.cfg.dataset, str(predictor.cfg.eval.get("split") or "val"))
    return [im.path for im in collect_images([folder])[:n]]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(predictor, paths: list[Path], display: int, out: Path) -> dict[str, list[float]]:
    from rsdet.predict.cli import _picture
    from rsdet.predict.images import read_image
    from rsdet.vis.draw import save_png

    times: dict[str, list[float]] = {"inference": [], "drawing": [], "png": []}
    images = [read_image(p) for p in paths]
    for image in images[:3]:  # warm-up (allocator, cudnn autotuning, font loading)
        _picture(image, predictor(image), predictor, None, 0, {}, [], display)
    for k, image in enumerate(images):
        _sync(predictor.device)
        t0 = time.perf_counter()
        det = predictor(image)
        _sync(predictor.device)
        t1 = time.perf_counter()
        picture = _picture(image, det, predictor, None, 0, {}, [], display)
        t2 = time.perf_counter()
        save_png(picture, out / f"{k}.png")
        t3 = time.perf_counter()
        times["inference"].append(t1 - t0)
        times["drawing"].append(t2 - t1)
        times["png"].append(t3 - t2)
    return times


def loop_seconds(predictor, paths: list[Path], display: int, out: Path, draw: bool) -> float:
    """The `rsdet predict` loop (read, infer, results, draw + background PNG writer) over ``paths``."""
    from rsdet.engine.inference import _to_coco
    from rsdet.predict.cli import _picture
    from rsdet.predict.images import read_image
    from rsdet.vis.writer import PngWriter

    start = time.perf_counter()
    with PngWriter() as writer:
        for k, path in enumerate(paths):
            image = read_image(path)
            det = predictor(image)
            _to_coco(det, k, predictor.category_ids)
            if draw:  # as rsdet predict: drawn and written by background threads
                writer.submit_drawing(functools.partial(_picture, image, det, predictor, None, k, {}, [], display),
                                      out / f"loop{k}.png")
    _sync(predictor.device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained run directory (or its checkpoint)")
    parser.add_argument("--images", type=Path, default=None, help="image folder (default: the run's validation split)")
    parser.add_argument("--n", type=int, default=100, help="images (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the images; medians over all (default 3)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--display-size", type=int, default=None, help="as rsdet predict (default 384)")
    parser.add_argument("--legacy-checkpoint", action="store_true", help="as rsdet predict (rsdet <= 0.1 checkpoints)")
    args = parser.parse_args(argv)

    from rsdet.engine.inference import pick_device
    from rsdet.predict.model import load_predictor
    from rsdet.vis.draw import DISPLAY_SIZE

    device = pick_device(args.device)
    predictor = load_predictor(args.run, device=device, allow_legacy=args.legacy_checkpoint)
    paths = _images(predictor, args.images, args.n)
    display = DISPLAY_SIZE if args.display_size is None else args.display_size
    times: dict[str, list[float]] = {"inference": [], "drawing": [], "png": []}
    loops = {"with drawing": [], "no drawing": []}
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for key, values in measure(predictor, paths, display, Path(tmp)).items():
                times[key] += values
            loops["no drawing"].append(loop_seconds(predictor, paths, display, Path(tmp), draw=False))
            loops["with drawing"].append(loop_seconds(predictor, paths, display, Path(tmp), draw=True))
    n = len(paths)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# bench_predict: {args.run} ({predictor.cfg.detector.name}), {n} images x {args.repeats} repeats, "
          f"device {device}, torch threads {torch.get_num_threads()}, {platform.machine()} {cpu_model()}")
    print("\n| step | median per image (ms) | per 100 images (s) | / inference |")
    print("|---|---|---|---|")
    for key in ("inference", "drawing", "png"):
        print(f"| {key} | {1000 * med[key]:.2f} | {100 * med[key]:.2f} | {med[key] / med['inference']:.3f} |")
    both = med["drawing"] + med["png"]
    print(f"| drawing + png | {1000 * both:.2f} | {100 * both:.2f} | {both / med['inference']:.3f} |")
    with_draw, without = statistics.median(loops["with drawing"]), statistics.median(loops["no drawing"])
    print(f"\npredict loop over {n} images (median of {args.repeats}): {without:.2f} s without drawing, "
          f"{with_draw:.2f} s with drawing (background threads): drawing adds "
          f"{with_draw - without:.2f} s = {(with_draw - without) / without:.3f} of the loop")
    print(f"target (issue 20): drawing <= 0.10 of inference -> drawing + png {both / med['inference']:.3f}, "
          f"added to the loop {(with_draw - without) / without:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
