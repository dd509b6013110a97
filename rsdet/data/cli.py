"""``rsdet data``: generate the embedded shapes dataset, inspect any COCO-format dataset.

    rsdet data shapes [--root DIR] [--num-train N] [--num-val N] [--image-size PX] [--seed S]
    rsdet data check ANNOTATIONS.json [--images DIR] [--verify-files]

``shapes`` starts from ``conf/dataset/shapes.yaml`` (the ``generate`` block ``rsdet train`` uses)
(from the checkout or the installed package, :func:`rsdet.paths.conf_dir`), so both commands
share one cache folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from rsdet.errors import RsdetError
from rsdet.paths import conf_dir

SHAPES_YAML = conf_dir() / "dataset" / "shapes.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsdet data", description="Generate or inspect datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    shapes = sub.add_parser("shapes", help="generate (once) the embedded shapes dataset and print its statistics")
    shapes.add_argument("--root", help="output folder (default: the cache folder `rsdet train` uses)")
    shapes.add_argument("--num-train", type=int, help="training images")
    shapes.add_argument("--num-val", type=int, help="validation images")
    shapes.add_argument("--image-size", type=int, help="square image side in pixels")
    shapes.add_argument("--seed", type=int, help="generation seed")
    shapes.add_argument("--config", type=Path, default=SHAPES_YAML, help="dataset config to start from")
    check = sub.add_parser("check", help="load a COCO-format annotation file and report what the loader sees")
    check.add_argument("annotations", type=Path, help="COCO-format instances .json")
    check.add_argument("--images", type=Path, help="image folder (default: the .json's folder)")
    check.add_argument("--verify-files", action="store_true", help="also check that every image file exists")
    return parser


def _shapes(args: argparse.Namespace, console: Console) -> int:
    from rsdet.data.build import ensure_generated

    cfg = OmegaConf.load(args.config) if args.config and args.config.is_file() else OmegaConf.create({"generate": {}})
    if "generate" not in cfg or cfg.generate is None:
        cfg.generate = {}
    overrides = {"num_train": args.num_train, "num_val": args.num_val, "image_size": args.image_size, "seed": args.seed}
    for key, value in overrides.items():
        if value is not None:
            cfg.generate[key] = value
    if args.root:
        cfg.root = args.root
    started = time.perf_counter()
    paths = ensure_generated(cfg)
    elapsed = time.perf_counter() - started
    from rsdet.data.shapes import read_manifest

    manifest = read_manifest(paths.root) or {}
    seconds = manifest.get("seconds", elapsed)
    verb = f"generated in {seconds:.1f} s" if paths.regenerated else "already generated (cached)"
    console.print(f"[bold]shapes dataset[/bold] {verb}: {paths.root}", soft_wrap=True)
    console.print(_stats_table(manifest.get("stats", {})))
    console.print(_class_table(manifest.get("stats", {})))
    console.print(f"train: {paths.train_annotations}\nval:   {paths.val_annotations}", soft_wrap=True)
    return 0


def _stats_table(stats: dict) -> Table:
    table = Table(title="images and instances per COCO size range (area < 32², 32²–96², > 96²)")
    for col in ("split", "images", "empty", "instances", "small", "medium", "large", "occluded"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, s in stats.items():
        sizes = s["sizes"]
        table.add_row(split, str(s["images"]), str(s["empty_images"]), str(s["instances"]), str(sizes["small"]),
                      str(sizes["medium"]), str(sizes["large"]), str(s["occluded_instances"]))  # fmt: skip
    return table


def _class_table(stats: dict) -> Table:
    table = Table(title="instances per class")
    table.add_column("split")
    names = list(next(iter(stats.values()))["classes"]) if stats else []
    for name in names:
        table.add_column(name, justify="right")
    for split, s in stats.items():
        table.add_row(split, *(str(s["classes"].get(n, 0)) for n in names))
    return table


def _check(args: argparse.Namespace, console: Console) -> int:
    from rsdet.data.coco_dataset import CocoDetectionDataset

    images = args.images or args.annotations.parent
    dataset = CocoDetectionDataset(images, args.annotations)
    console.print(dataset.describe())
    table = Table(title=str(args.annotations))
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in dataset.stats.items():
        table.add_row(key, str(value))
    console.print(table)
    names = ", ".join(dataset.category_names[:10]) + (" ..." if dataset.num_classes > 10 else "")
    console.print(f"{dataset.num_classes} classes: {names}", soft_wrap=True)
    if args.verify_files:
        dataset.verify_files()
        console.print(f"all {len(dataset)} image files present under {images}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help or a usage error: return the code instead of exiting
        return int(exit_.code or 0)
    console = Console()
    try:
        return _shapes(args, console) if args.command == "shapes" else _check(args, console)
    except RsdetError as err:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {err}", highlight=False, soft_wrap=True)
        return 1
