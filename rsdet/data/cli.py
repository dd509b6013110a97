"""``rsdet data``: generate the embedded shapes datasets, inspect any COCO-format dataset.

    rsdet data shapes      [--root DIR] [--num-train N] [--num-val N] [--image-size PX] [--seed S]
    rsdet data shapes_lvis [--root DIR] [--num-train N] [--num-val N] [--image-size PX] [--seed S]
    rsdet data check ANNOTATIONS.json [--images DIR] [--verify-files]
    rsdet data pretrain-backbone [--depth D] [--force]
    rsdet data browse DATASET [--split train|val] [--n N] [--out DIR] [--images DIR] [--root DIR] [--seed S]
                      [--ids ID,...] [--display-size PX] [--set KEY=VALUE ...]

``shapes`` / ``shapes_lvis`` start from ``conf/dataset/shapes.yaml`` / ``shapes_lvis.yaml`` (the
``generate`` block ``rsdet train`` uses; from the checkout or the installed package,
:func:`rsdet.paths.conf_dir`), so the command and training share one cache folder.
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
SHAPES_LVIS_YAML = conf_dir() / "dataset" / "shapes_lvis.yaml"
GENERATED = {"shapes": SHAPES_YAML, "shapes_lvis": SHAPES_LVIS_YAML}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsdet data", description="Generate or inspect datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"shapes": "generate (once) the embedded shapes dataset and print its statistics",
             "shapes_lvis": "generate (once) the long-tailed, LVIS-format shapes dataset (72 shape × colour "
                            "classes) and print its statistics"}  # fmt: skip
    for name, yaml in GENERATED.items():
        shapes = sub.add_parser(name, help=helps[name])
        shapes.add_argument("--root", help="output folder (default: the cache folder `rsdet train` uses)")
        shapes.add_argument("--num-train", type=int, help="training images")
        shapes.add_argument("--num-val", type=int, help="validation images")
        shapes.add_argument("--image-size", type=int, help="square image side in pixels")
        shapes.add_argument("--seed", type=int, help="generation seed")
        shapes.add_argument("--config", type=Path, default=yaml, help="dataset config to start from")
    check = sub.add_parser("check", help="load a COCO-format annotation file and report what the loader sees")
    check.add_argument("annotations", type=Path, help="COCO-format instances .json")
    check.add_argument("--images", type=Path, help="image folder (default: the .json's folder)")
    check.add_argument("--verify-files", action="store_true", help="also check that every image file exists")
    _browse_parser(sub)
    pre = sub.add_parser(
        "pretrain-backbone",
        help="train (once) the shapes-pretrained ResNet of detector.backbone.pretrained=shapes and print its "
             "held-out accuracy",
        description="Train the ResNet that detector.backbone.pretrained=shapes loads: an object classifier "
                    "(the shape class of each object crop) on shapes images drawn from a seed stream of their own "
                    "(never an image of the detection splits), cached under the dataset cache "
                    "(<cache>/backbones/shapes-resnet<depth>-<hash>.pt, a tensors-only state dict, and its .json "
                    "manifest). `rsdet train` trains it on first use; this command does it up front.")
    pre.add_argument("--depth", type=int, default=10, help="ResNet depth (default 10, the CPU presets' backbone)")
    pre.add_argument("--force", action="store_true", help="train again even if the cached file is complete")
    return parser


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ids must be comma-separated image ids, got {text!r}") from None


def _browse_parser(sub) -> None:
    browse = sub.add_parser(
        "browse", help="draw the ground truth of a dataset split (boxes, class names, masks, crowd regions) as PNGs",
        description="Draw the ground truth of a dataset split: every annotation of each chosen image, with its class "
                    "name and mask; crowd regions filled grey; LVIS images list their negative and not-exhaustive "
                    "categories. The annotation file goes through the training loader's checks.",
        epilog="examples:\n  rsdet data browse shapes --n 8\n  rsdet data browse shapes_lvis --split train\n"
               "  rsdet data browse coco --root /data/coco --n 32\n"
               "  rsdet data browse my/instances_val.json --images my/images\n"
               "  rsdet data browse coco_format --set val.images=imgs --set val.annotations=val.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    browse.add_argument("dataset", metavar="DATASET",
                        help="a dataset config name (shapes, shapes_lvis, coco, lvis, coco_format), a dataset .yaml, "
                             "or a COCO/LVIS-format annotation .json")
    browse.add_argument("--split", choices=("train", "val"), default="val",
                        help="split of a dataset config (default val)")
    browse.add_argument("--n", type=int, default=16, help="images to draw, drawn at random with --seed (default 16)")
    browse.add_argument("--seed", type=int, default=0, help="seed of the random choice of images (default 0)")
    browse.add_argument("--ids", type=_ids, default=None, help="draw these image ids instead (comma-separated)")
    browse.add_argument("--out", type=Path, default=None,
                        help="output folder (default outputs/browse/<dataset>-<split>); files <image id>_<name>.png")
    browse.add_argument("--images", type=Path, default=None,
                        help="image folder of an annotation .json (default: its folder)")
    browse.add_argument("--root", default=None, help="dataset.root of a dataset config (e.g. /data/coco)")
    browse.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the dataset config (e.g. val.annotations=x.json); repeatable")
    browse.add_argument("--display-size", type=int, default=None, metavar="PX",
                        help="enlarge pictures whose shorter side is below PX by a whole factor (default 384; 0: off)")


def _browse(args: argparse.Namespace, console: Console) -> int:
    from rsdet.vis.browse import BrowseOptions, browse
    from rsdet.predict.cli import _progress

    if args.n < 1:
        raise RsdetError(f"--n must be at least 1, got {args.n}")
    opts = BrowseOptions(dataset=args.dataset, split=args.split, n=args.n, out=args.out, images=args.images,
                         root=args.root, seed=args.seed, ids=args.ids, display_size=args.display_size,
                         overrides=tuple(args.overrides))
    with _progress(console) as progress:
        out, written = browse(opts, progress)
    console.print(f"{len(written)} images drawn -> {out}", soft_wrap=True, highlight=False)
    return 0


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
    console.print(f"[bold]{args.command} dataset[/bold] {verb}: {paths.root}", soft_wrap=True)
    stats = manifest.get("stats", {})
    console.print(_stats_table(stats))
    if all("frequency_groups" in s for s in stats.values()) and stats:
        console.print(_group_table(stats))
        for split, s in stats.items():
            console.print(_federated_line(split, s), soft_wrap=True)
        console.print(_tail_line(stats["train"]["classes"]), soft_wrap=True)
    else:
        console.print(_class_table(stats))
    console.print(f"train: {paths.train_annotations}\nval:   {paths.val_annotations}", soft_wrap=True)
    return 0


def _pretrain(args: argparse.Namespace, console: Console) -> int:
    from rsdet.data.build import cache_root
    from rsdet.models.backbone import _RESNETS
    from rsdet.models.pretrain import default_params, ensure_shapes_backbone

    if args.depth not in _RESNETS:
        raise RsdetError(f"--depth must be one of {sorted(_RESNETS)}, got {args.depth}")
    path, manifest, trained = ensure_shapes_backbone(cache_root(), default_params(args.depth), force=args.force)
    verb = f"trained in {manifest.get('train_seconds', 0):.0f} s" if trained else "already trained (cached)"
    console.print(f"[bold]shapes-pretrained ResNet-{args.depth}[/bold] {verb}: {path}", soft_wrap=True)
    if "held_out_images" in manifest:
        console.print(f"held-out objects classified right: {100 * manifest['held_out_accuracy']:.1f} % of "
                      f"{manifest['held_out_objects']} (from {manifest['held_out_images']} images never trained on)",
                      soft_wrap=True, highlight=False)
    console.print("use it with detector.backbone.pretrained=shapes", soft_wrap=True, highlight=False)
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


def _group_table(stats: dict) -> Table:
    table = Table(title="LVIS frequency groups (by training images: rare 1–10, common 11–100, frequent > 100)")
    for col in ("split", "group", "classes", "present in split", "instances"):
        table.add_column(col, justify="left" if col in ("split", "group") else "right")
    names = {"r": "rare", "c": "common", "f": "frequent"}
    for split, s in stats.items():
        for g, group in s["frequency_groups"].items():
            table.add_row(split if g == "r" else "", names[g], str(group["classes"]), str(group["classes_present"]),
                          str(group["instances"]))  # fmt: skip
    return table


def _federated_line(split: str, s: dict) -> str:
    per_image = s["negative_labels"] / max(s["images"], 1)
    return (f"{split}: {s['negative_labels']} negative (verified absent) labels, {per_image:.1f} per image; "
            f"{s['not_exhaustive_images']} images with a not-exhaustive category")


def _tail_line(per_class: dict) -> str:
    ranked = sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0]))
    head = ", ".join(f"{n} {c}" for n, c in ranked[:3])
    tail = ", ".join(f"{n} {c}" for n, c in ranked[-3:])
    return f"train instances per class: most {head}; least {tail}"


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
        if args.command == "browse":
            return _browse(args, console)
        if args.command == "pretrain-backbone":
            return _pretrain(args, console)
        return _shapes(args, console) if args.command in GENERATED else _check(args, console)
    except RsdetError as err:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {err}", highlight=False, soft_wrap=True)
        return 1
