"""``rsdet predict``: run a trained detector on images and draw what it finds.

    rsdet predict RUN_OR_CHECKPOINT IMAGE_OR_FOLDER... [--out DIR] [--score-thresh T] [--gt ANNOTATIONS]
                  [--config CONFIG.yaml] [--device auto|cpu|cuda] [--display-size PX] [--no-draw]
                  [--legacy-checkpoint]

Writes one PNG per image (detections drawn; with ``--gt`` beside the ground truth) and the detections
as COCO results (``predictions_bbox.json``, ``predictions_segm.json`` for mask detectors, and
``images.json``, the image records their ``image_id`` refers to). docs/visualisation.md.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rsdet.errors import DataError, RsdetError

_EPILOG = """\
examples:
  rsdet predict outputs/runs/2026-11-28/10-24-40_rs photos/ --out drawn/
  rsdet predict outputs/runs/<date>/<run>/checkpoints/last.pt img1.jpg img2.jpg --score-thresh 0.5
  rsdet predict RUN val2017/ --gt annotations/instances_val2017.json   # detections beside the ground truth
  rsdet evaluate annotations/instances_val2017.json drawn/predictions_bbox.json   # score them (with --gt)

The detector is rebuilt from the run's config.yaml (a YAML safe loader; interpolations refused) and
its checkpoint; each image is resized by the detector's own transform, and the boxes are drawn in
the image's pixels. Small images are enlarged by a whole factor for drawing (--display-size).
Unreadable images are listed and skipped (exit status 1); the others are still written.
"""


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"--score-thresh must be a number in [0, 1), got {text!r}")
    return value


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--display-size must be a number of pixels >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsdet predict", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a trained detector on images: one PNG per image with its boxes, class names, scores\n"
                    "and (mask detectors) instance masks drawn, plus the detections as COCO results.")
    parser.add_argument("source", metavar="RUN_OR_CHECKPOINT", type=Path,
                        help="a run directory of `rsdet train` (its checkpoints/last.pt and config.yaml) or a "
                             ".pt checkpoint inside one")
    parser.add_argument("images", metavar="IMAGE_OR_FOLDER", type=Path, nargs="+",
                        help="image files and/or folders (searched recursively for .jpg, .png, .bmp, .tif, "
                             ".webp, ...)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: outputs/predict/<run name>); PNGs keep the images' "
                             "relative paths inside a folder")
    parser.add_argument("--score-thresh", type=_score, default=None, metavar="T",
                        help="keep detections scoring above T (default: the run's test threshold, "
                             "eval.score_thresh or the loss recipe's: RS 0.40, CE 0.05, ATSS/PAA 0.05)")
    parser.add_argument("--gt", type=Path, default=None, metavar="ANNOTATIONS",
                        help="COCO-format annotation file: draw each image's ground truth (boxes, masks, crowd "
                             "regions) beside its detections, and use its image ids in the results; images "
                             "are matched by file_name")
    parser.add_argument("--config", type=Path, default=None,
                        help="the config.yaml to rebuild the detector from (default: the run's own), for a "
                             "checkpoint kept outside its run directory")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    parser.add_argument("--display-size", type=_size, default=None, metavar="PX",
                        help="enlarge pictures whose shorter side is below PX by a whole factor (nearest "
                             "neighbour) so captions stay readable (default 384; 0: draw at the image size)")
    parser.add_argument("--no-draw", action="store_true", help="write the COCO results only, no PNGs")
    parser.add_argument("--legacy-checkpoint", action="store_true",
                        help="accept a checkpoint of rsdet <= 0.1 (format 1-2: its numpy RNG array is allowed in the "
                             "safe loader, nothing else; docs/resume.md)")
    return parser


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=False)


def _labels_for_gt(predictor, gt) -> tuple[dict[int, int], list[str]]:
    """The detector's label of every ground-truth category and the names of all labels: the detector's
    own, then those of categories it does not know (drawn in colours of their own)."""
    names = list(predictor.class_names)
    label_of = {cid: k for k, cid in enumerate(predictor.category_ids)}
    for cid, name in sorted(gt.categories.items()):
        if cid not in label_of:
            label_of[cid] = len(names)
            names.append(f"{name} (not a class of the detector)")
    return label_of, names


def _picture(image, det, predictor, gt, image_id: int, label_of: dict, gt_names: list[str], display: int):
    """The PNG of one image: its detections, and with ``--gt`` its ground truth beside them."""
    from rsdet.vis.draw import display_factor, draw_detections, draw_instances, side_by_side, titled

    h, w = int(image.shape[-2]), int(image.shape[-1])
    factor = display_factor(h, w, display)
    panel = draw_detections(image, det, predictor.class_names, factor=factor)
    if gt is None:
        return panel
    panel = titled(panel, f"detections > {predictor.score_thresh:g}: {len(det['scores'])}")
    if image_id not in gt.images:
        return panel
    truth = gt.instances(image_id, h, w, label_of)
    drawn = draw_instances(image, truth["boxes"], truth["labels"], gt_names, masks=truth["masks"], crowd=truth["crowd"],
                           factor=factor)
    return side_by_side([panel, titled(drawn, f"ground truth: {len(truth['boxes'])}")])


def predict(args: argparse.Namespace, console: Console) -> int:
    from rsdet.engine.inference import _to_coco, pick_device, split_iou_types
    from rsdet.predict.images import GroundTruth, collect_images, read_image, write_images_json
    from rsdet.predict.model import load_predictor
    from rsdet.records import atomic_write_text, dumps
    from rsdet.vis.draw import DISPLAY_SIZE
    from rsdet.vis.writer import PngWriter

    images = collect_images(args.images)
    gt = GroundTruth(args.gt) if args.gt else None
    device = pick_device(args.device)
    predictor = load_predictor(args.source, device=device, config=args.config, score_thresh=args.score_thresh,
                               allow_legacy=args.legacy_checkpoint)
    if gt is not None and predictor.notes and len(gt.categories) == len(predictor.class_names):
        # the run's dataset is not here: the ground truth's categories name the labels (sorted ids, as training)
        predictor.category_ids = sorted(gt.categories)
        predictor.class_names = [gt.categories[c] for c in predictor.category_ids]
        predictor.notes = ["class names and category ids from --gt (the run's dataset is not on this machine)"]
    for note in predictor.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
    run_name = predictor.checkpoint.parent.parent.name if predictor.checkpoint.parent.name == "checkpoints" \
        else predictor.checkpoint.parent.name
    out = args.out or Path("outputs") / "predict" / run_name
    out.mkdir(parents=True, exist_ok=True)
    display = DISPLAY_SIZE if args.display_size is None else args.display_size
    label_of, gt_names = _labels_for_gt(predictor, gt) if gt is not None else ({}, [])
    next_id = (max(gt.images) if gt is not None and gt.images else 0) + 1
    results, image_records, failed, unmatched = [], [], [], 0
    infer_s = draw_s = 0.0
    writer = PngWriter()
    with _progress(console) as progress, writer:
        task = progress.add_task("predicting", total=len(images), info="")
        for item in images:
            try:
                image = read_image(item.path)
            except DataError as exc:
                failed.append(str(exc))
                progress.advance(task)
                continue
            image_id = gt.find(item) if gt is not None else None
            if image_id is None:
                unmatched += gt is not None
                image_id, next_id = next_id, next_id + 1
            start = time.perf_counter()
            det = predictor(image)
            infer_s += time.perf_counter() - start
            results += _to_coco(det, image_id, predictor.category_ids)
            image_records.append({"id": image_id, "file_name": str(item.path), "width": int(image.shape[-1]),
                                  "height": int(image.shape[-2])})
            if not args.no_draw:  # drawn and written by background threads (rsdet/vis/writer.py)
                start = time.perf_counter()
                writer.submit_drawing(functools.partial(_picture, image, det, predictor, gt, image_id, label_of,
                                                        gt_names, display), out / f"{item.name}.png")
                draw_s += time.perf_counter() - start
            progress.update(task, advance=1, info=f"{len(results)} detections")
        start = time.perf_counter()
        writer.close()  # the pictures still being drawn
        draw_s += time.perf_counter() - start
    types = ["bbox", "segm"] if predictor.predicts_masks else ["bbox"]
    for iou_type, records in split_iou_types(results, types, str(predictor.cfg.detector.name)).items():
        atomic_write_text(out / f"predictions_{iou_type}.json", dumps(records, indent=None))
    categories = [{"id": c, "name": n} for c, n in zip(predictor.category_ids, predictor.class_names)]
    write_images_json(out / "images.json", image_records, categories)
    console.print(f"{len(image_records)} images, {len(results)} detections above {predictor.score_thresh:g} -> "
                  f"{escape(str(out))} (inference {infer_s:.1f} s"
                  + ("" if args.no_draw else f", waiting for drawing {draw_s:.1f} s") + ")", soft_wrap=True)
    if unmatched:
        console.print(f"[yellow]note:[/yellow] {unmatched} images are not in {escape(str(args.gt))} (matched by "
                      "file_name): drawn without ground truth, with new image ids", soft_wrap=True)
    if failed:
        err = Console(stderr=True)
        err.print(f"[bold red]error:[/bold red] {len(failed)} of {len(images)} images could not be read and were "
                  "skipped:", highlight=False, soft_wrap=True)
        for message in failed:
            err.print(f"  {escape(message)}", highlight=False, soft_wrap=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help or a usage error: return the code instead of exiting
        return int(exit_.code or 0)
    console = Console()
    try:
        return predict(args, console)
    except RsdetError as err:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 1

