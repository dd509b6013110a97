"""``rsdet evaluate``: metrics of a results file, or of a trained run / checkpoint.

    rsdet evaluate GT.json RESULTS.json [--iou-type bbox|segm] [--protocol coco|lvis]
                   [--max-dets N] [--per-class] [--score-thresholds 1e-4,1e-3,...] [--out DIR]
    rsdet evaluate RUN_DIR|CHECKPOINT.pt [--score-thresholds ...] [--out DIR] [--device cpu|cuda]
                   [--overwrite] [--legacy-checkpoint]

The top-level ``rsdet`` CLI dispatches ``rsdet evaluate ...`` to :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rsdet.errors import RsdetError
from rsdet.evaluation.evaluator import evaluate, metric_keys
from rsdet.evaluation.io import read_json
from rsdet.evaluation.sweep import metrics_table, render_table, threshold_sweep, write_table
from rsdet.records import RunRecord, atomic_write_text, dumps, is_run_dir

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")

_EPILOG = """\
examples:
  rsdet evaluate instances_val2017.json detections.json
  rsdet evaluate lvis_v1_val.json segm.json --iou-type segm --protocol lvis --per-class
  rsdet evaluate lvis_v1_val.json dets.json --score-thresholds 1e-4,1e-3,1e-2,0.1,0.4,0.6,0.8
  rsdet evaluate outputs/2024-01-01/12-00-00 --score-thresholds 1e-4,0.1,0.4,0.6 --device cuda

metrics are fractions in metrics.json (-1 = undefined, e.g. no ground truth of that size) and
percent in the printed tables. oLRP (lower is better) follows Oksuz et al., TPAMI 2021.
A score-threshold sweep of a results file keeps detections with score > threshold. With a run
directory or checkpoint, its config decides the data set, protocol and IoU type; inference runs
on the validation split and, with --score-thresholds, fps is measured per threshold.
Results go beside a run's record, never over it: metrics_eval.json (and predictions_*_eval.json)
in a run directory; --overwrite replaces its metrics.json evaluation and predictions instead.
"""


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers (e.g. 1e-4,1e-3,0.1,0.6)") from None
    if not values or any(not 0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"score thresholds must lie in [0, 1), got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--max-dets must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsdet evaluate",
        description="COCO/LVIS AP (pycocotools / lvis, identical numbers) and optimal LRP with its\n"
                    "components, for a COCO results file or a trained run; optional score-threshold\n"
                    "sweep laid out like Table S11 of the RS Loss supplementary (Markdown, CSV, LaTeX).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="GT_OR_RUN",
                        help="ground-truth annotation JSON (COCO or LVIS format), or a run directory "
                             "/ .pt checkpoint to run inference on its configured validation set")
    parser.add_argument("results", metavar="RESULTS", nargs="?",
                        help="COCO results JSON (image_id, category_id, bbox, score[, segmentation]); "
                             "required with a ground-truth file")
    parser.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox",
                        help="match boxes or masks (default: bbox)")
    parser.add_argument("--protocol", choices=("auto", "coco", "lvis"), default="auto",
                        help="evaluator; auto picks lvis when the ground truth has LVIS's federated "
                             "fields (neg_category_ids), else coco (default: auto)")
    parser.add_argument("--max-dets", type=_positive_int, default=None, metavar="N",
                        help="detections per image (default: 100 coco, 300 lvis)")
    parser.add_argument("--per-class", action="store_true",
                        help="also report per-class AP, oLRP, components and LRP-optimal thresholds")
    parser.add_argument("--score-thresholds", type=_thresholds, default=None, metavar="T1,T2,...",
                        help="evaluate at each test score threshold, e.g. 1e-4,1e-3,1e-2,0.1,0.4,0.6,0.8")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write metrics.json and sweep tables (default: the results "
                             "file's directory, or the run directory)")
    parser.add_argument("--device", default="auto",
                        help="device for inference on a run/checkpoint (default: auto)")
    parser.add_argument("--verbose", action="store_true",
                        help="show pycocotools' / lvis' own progress output")
    parser.add_argument("--overwrite", action="store_true",
                        help="in a run directory, replace the run's own metrics.json evaluation (training "
                             "time and epoch blocks stay) and predictions_*.json instead of writing "
                             "metrics_eval.json / predictions_*_eval.json beside them")
    parser.add_argument("--legacy-checkpoint", action="store_true",
                        help="accept a checkpoint of format 1-2 (earlier rsdet 0.1): numpy arrays are then "
                             "allowed in the safe loader, nothing else (docs/resume.md)")
    return parser


def _detect_protocol(dataset: Any) -> str:
    images = dataset.get("images") if isinstance(dataset, dict) else None
    first = images[0] if isinstance(images, list) and images else {}
    return "lvis" if isinstance(first, dict) and "neg_category_ids" in first else "coco"


def _is_run(path: Path) -> bool:
    return path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES


def _evaluate_run(args: argparse.Namespace) -> Any:
    try:
        from rsdet.engine.inference import evaluate_run  # noqa: PLC0415 - torch is heavy
    except ImportError as err:
        raise RsdetError(
            f"evaluating a run directory or checkpoint needs rsdet.engine.inference "
            f"({err}); evaluate a results file instead: rsdet evaluate GT.json RESULTS.json") from err
    extra = {k: True for k, on in (("overwrite", args.overwrite), ("allow_legacy", args.legacy_checkpoint)) if on}
    return evaluate_run(str(args.target), score_thresholds=args.score_thresholds,
                        out_dir=str(args.out) if args.out else None, device=args.device, **extra)


def _print_result(result: Any, console: Console, protocol: str | None = None) -> None:
    if isinstance(result, dict) and ("rows" in result or "rows_segm" in result):
        device = f" ({result['device']})" if result.get("device") else ""
        if "rows" in result:
            console.print(render_table(result["rows"], title="Score-threshold sweep, box AP" + device))
        if result.get("rows_segm"):
            from rsdet.engine.inference import mask_sweep_columns  # noqa: PLC0415 - torch is heavy

            lvis = any("APr" in r["metrics"] for r in result["rows_segm"])
            columns = mask_sweep_columns("lvis" if lvis else "coco", with_box_ap="rows" in result)
            console.print(render_table(result["rows_segm"], columns=columns,
                                       title="Score-threshold sweep, mask AP" + device))
        return
    for iou_type, metrics in (result or {}).items():
        if not isinstance(metrics, dict):
            continue
        proto = protocol or ("lvis" if "APr" in metrics else "coco")
        console.print(metrics_table(metrics, metric_keys(proto), title=f"{iou_type} ({proto})"))
        per_class = metrics.get("per_class")
        if per_class:
            table = Table(title=f"{iou_type}: per class (%)")
            for col in ("id", "name", "AP", "oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN", "LRP thr"):
                table.add_column(col, justify="left" if col == "name" else "right")
            for cat, c in per_class.items():
                cells = [c[k] for k in ("AP", "oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN")]
                thr = c["lrp_optimal_threshold"]
                table.add_row(str(cat), escape(c["name"]),
                              *("–" if v < 0 else f"{100 * v:.1f}" for v in cells),
                              "–" if thr < 0 else f"{thr:.3f}")
            console.print(table)


def _evaluate_files(args: argparse.Namespace, console: Console) -> dict:
    protocol = args.protocol
    if protocol == "auto":
        protocol = _detect_protocol(read_json(args.target, "Ground-truth"))
    out = args.out if args.out is not None else Path(args.results).resolve().parent
    # Paths, not loaded objects, go to evaluate(): its error messages then name the files.
    metrics = evaluate(args.target, args.results, iou_type=args.iou_type, protocol=protocol,
                       max_dets=args.max_dets, per_class=args.per_class, verbose=args.verbose)
    result = {args.iou_type: metrics}
    _print_result(result, console, protocol)
    name = "metrics.json"
    if is_run_dir(out):  # a run's record: beside it, or (--overwrite) this IoU type's block replaced in it
        previous = RunRecord(out, create=False).metrics or {}
        if args.overwrite:
            result = {**previous, **result}
        else:
            name = "metrics_eval.json"
    atomic_write_text(out / name, dumps(result))
    written = [out / name]
    if args.score_thresholds:
        rows = threshold_sweep(args.target, args.results, args.score_thresholds,
                               iou_type=args.iou_type, protocol=protocol, max_dets=args.max_dets,
                               verbose=args.verbose)
        console.print(render_table(rows, title="Score-threshold sweep"))
        paths = write_table(rows, out, "threshold_sweep")
        atomic_write_text(out / "threshold_sweep.json", dumps({"iou_type": args.iou_type,
                                                               "protocol": protocol, "rows": rows}))
        written += [*paths.values(), out / "threshold_sweep.json"]
    console.print("wrote " + ", ".join(str(p) for p in written))
    return result


def main(argv: list[str] | None = None) -> int:
    """Run ``rsdet evaluate``; returns the process exit code (0 ok, 1 bad input, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    target = Path(args.target)
    try:
        if _is_run(target):
            if args.results is not None:
                parser.error("RESULTS is only used with a ground-truth file, not with a run "
                             "directory or checkpoint")
            if not target.exists():
                raise RsdetError(f"checkpoint not found: {target}")
            _print_result(_evaluate_run(args), console)
        else:
            if args.results is None:
                parser.error("RESULTS is required when GT_OR_RUN is a ground-truth file "
                             "(or pass a run directory / .pt checkpoint)")
            _evaluate_files(args, console)
    except RsdetError as err:
        # escape: messages quote values like [x, y, w, h], which rich would read as markup
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(err))}",
                                                   highlight=False)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
