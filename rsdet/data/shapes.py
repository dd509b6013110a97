"""The embedded "shapes" detection dataset: generated once, in COCO format, into a cache folder.

``ensure_shapes_dataset(root, ...)`` returns the paths of a dataset laid out like COCO::

    <root>/train/000000.jpg ...          <root>/annotations/instances_train.json
    <root>/val/000000.jpg ...            <root>/annotations/instances_val.json
    <root>/manifest.json                 generation parameters, their hash, dataset statistics

It is deterministic (image ``i`` of a split depends only on ``(seed, split, i)`` and the drawing
parameters), idempotent (a folder whose manifest hash matches the requested parameters is reused
as is; any parameter change regenerates it) and atomic (a generation writes into a temporary
sibling folder that is renamed into place only once complete, under a file lock, so an
interrupted or concurrent generation never leaves a half dataset that looks complete).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rsdet.data.shapes_draw import CLASSES, COLOUR_NAMES, LARGE_MIN, SMALL_MAX, DrawParams, draw_image
from rsdet.errors import DataError

__all__ = ["CLASSES", "COLOUR_NAMES", "ShapesPaths", "category_names", "ensure_shapes_dataset", "frequency_group",
           "shapes_params", "read_manifest"]

log = logging.getLogger(__name__)

# Bump when the drawing code changes what a given seed produces: old caches then regenerate.
# 2: the 12-colour palette (purple, brown, pink added for shapes_lvis) also colours the 6-class images; that
# change (2026-11-28) redrew every image without a bump, so a cache written before it held other images
# under the same hash (docs/datasets.md, "Generator versions").
GENERATOR_VERSION = 2
MANIFEST = "manifest.json"
_SPLIT_CODES = {"train": 0, "val": 1}
# Seeds the ranking of the classes by frequency (a sequence no image's [seed, split, index] can equal).
_RANKING_STREAM = (7, 7, 7)
# LVIS' frequency groups by the number of training images containing a category: rare 1–10 (0 too,
# which LVIS never has), common 11–100, frequent > 100.
RARE_MAX_IMAGES, COMMON_MAX_IMAGES = 10, 100
# Long-tail / LVIS-format options and their values when off. They enter the parameters (and so the
# cache hash) only when one of them is on, so plain shapes datasets keep their hash.
_LONG_TAIL_DEFAULTS = {"colours": None, "zipf_exponent": 0.0, "zipf_offset": 0.0, "lvis_format": False,
                       "negatives_per_image": [2, 5], "not_exhaustive_fraction": 0.05}

# Progress callback: (split, images done in split, images in split).
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ShapesPaths:
    """Where a generated shapes dataset lives; ``regenerated`` tells whether this call wrote it."""

    root: Path
    train_images: Path
    train_annotations: Path
    val_images: Path
    val_annotations: Path
    manifest: Path
    regenerated: bool = False

    @classmethod
    def under(cls, root: Path, regenerated: bool = False) -> ShapesPaths:
        return cls(
            root=root,
            train_images=root / "train",
            train_annotations=root / "annotations" / "instances_train.json",
            val_images=root / "val",
            val_annotations=root / "annotations" / "instances_val.json",
            manifest=root / MANIFEST,
            regenerated=regenerated,
        )


def shapes_params(
    *,
    num_train: int = 800,
    num_val: int = 200,
    image_size: int = 192,
    seed: int = 0,
    classes: Sequence[str] = CLASSES,
    min_objects: int = 1,
    max_objects: int = 6,
    empty_fraction: float = 0.03,
    size_mix: Sequence[float] = (0.3, 0.4, 0.3),
    min_object_size: float = 10.0,
    max_object_frac: float = 0.7,
    max_occlusion: float = 0.45,
    occlusion_prob: float = 0.35,
    noise: Sequence[float] = (4.0, 12.0),
    jpeg_quality: int = 90,
    colours: Sequence[str] | None = None,
    zipf_exponent: float = 0.0,
    zipf_offset: float = 0.0,
    lvis_format: bool = False,
    negatives_per_image: Sequence[int] = (2, 5),
    not_exhaustive_fraction: float = 0.05,
) -> dict:
    """Validate generation parameters and return them as a plain, hashable-by-JSON dict.

    num_train / num_val: images per split. image_size: square side in pixels. seed: master seed.
    classes: shape names (a subset of ``CLASSES``), category ids are 1.. in this order.
    min_objects / max_objects: objects attempted per image (a placement that would hide more
    than ``max_occlusion`` of an earlier object is retried, then skipped).
    empty_fraction: probability that an image has no object at all (negatives).
    size_mix: probabilities of drawing an object in the COCO small / medium / large area range.
    min_object_size: smallest sqrt(area) in pixels. max_object_frac: largest sqrt(area) as a
    fraction of image_size. occlusion_prob: chance to aim a new object at an existing one.
    noise: range of the per-image Gaussian pixel-noise sigma. jpeg_quality: JPEG quality.

    Long-tailed, LVIS-style variant (``conf/dataset/shapes_lvis.yaml``):
    colours: palette colour names (``COLOUR_NAMES``); each class is then a shape × colour pair named
    ``<colour>_<shape>``, ids 1.. shape-major. zipf_exponent / zipf_offset: each object's class is
    drawn with probability ∝ 1 / (rank + zipf_offset) ** zipf_exponent, ranks 1.. being a seeded
    permutation of the classes (exponent 0: uniform). lvis_format: write LVIS fields — each
    category's ``frequency`` (r/c/f from its training image count), ``image_count`` and
    ``instance_count``; each image's ``neg_category_ids`` (``negatives_per_image`` [low, high]
    absent categories, verified absent by construction) and ``not_exhaustive_category_ids`` (one
    present category, in a ``not_exhaustive_fraction`` of the images with objects; all its instances
    are still annotated).
    """
    unknown = [c for c in classes if c not in CLASSES]
    checks = [
        (not unknown, f"unknown shape classes {unknown}; choose from {list(CLASSES)}"),
        (len(classes) > 0 and len(set(classes)) == len(classes), "classes must be non-empty and unique"),
        (num_train >= 1 and num_val >= 1, "num_train and num_val must be >= 1"),
        (image_size >= 32, "image_size must be >= 32 pixels"),
        (1 <= min_objects <= max_objects, "need 1 <= min_objects <= max_objects"),
        (0.0 <= empty_fraction < 1.0, "empty_fraction must be in [0, 1)"),
        (len(size_mix) == 3 and min(size_mix) >= 0 and sum(size_mix) > 0,
         "size_mix must be three non-negative weights (small, medium, large)"),
        (0.0 <= max_occlusion < 1.0, "max_occlusion must be in [0, 1)"),
        (0.0 <= occlusion_prob <= 1.0, "occlusion_prob must be in [0, 1]"),
        (len(noise) == 2 and 0 <= noise[0] <= noise[1], "noise must be [low, high] sigmas"),
        (1 <= jpeg_quality <= 100, "jpeg_quality must be in [1, 100]"),
        (min_object_size >= 2 and 0 < max_object_frac <= 1, "bad min_object_size/max_object_frac"),
        (colours is None or (len(colours) > 0 and len(set(colours)) == len(colours)
                             and all(c in COLOUR_NAMES for c in colours)),
         f"colours must be unique names from {list(COLOUR_NAMES)} (or null: colour is not part of the class)"),
        (zipf_exponent >= 0 and zipf_offset >= 0, "zipf_exponent and zipf_offset must be >= 0"),
        (len(negatives_per_image) == 2 and 0 <= negatives_per_image[0] <= negatives_per_image[1],
         "negatives_per_image must be [low, high] with 0 <= low <= high"),
        (0.0 <= not_exhaustive_fraction <= 1.0, "not_exhaustive_fraction must be in [0, 1]"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise DataError(f"shapes dataset: {message} (dataset.generate.* in conf/dataset/shapes.yaml)")
    params = {
        "num_train": int(num_train), "num_val": int(num_val), "image_size": int(image_size),
        "seed": int(seed), "classes": list(classes), "min_objects": int(min_objects),
        "max_objects": int(max_objects), "empty_fraction": float(empty_fraction),
        "size_mix": [float(x) for x in size_mix], "min_object_size": float(min_object_size),
        "max_object_frac": float(max_object_frac), "max_occlusion": float(max_occlusion),
        "occlusion_prob": float(occlusion_prob), "noise": [float(x) for x in noise],
        "jpeg_quality": int(jpeg_quality),
    }  # fmt: skip
    long_tail = {
        "colours": list(colours) if colours is not None else None, "zipf_exponent": float(zipf_exponent),
        "zipf_offset": float(zipf_offset), "lvis_format": bool(lvis_format),
        "negatives_per_image": [int(v) for v in negatives_per_image],
        "not_exhaustive_fraction": float(not_exhaustive_fraction),
    }  # fmt: skip
    if any(long_tail[k] != _LONG_TAIL_DEFAULTS[k] for k in ("colours", "zipf_exponent", "lvis_format")):
        params.update(long_tail)
    return params


def _long_tail(params: dict) -> dict:
    return {k: params.get(k, v) for k, v in _LONG_TAIL_DEFAULTS.items()}


def category_names(params: dict) -> list[str]:
    """Category names, in id order (ids 1..): the shapes, or ``<colour>_<shape>`` pairs shape-major."""
    colours = _long_tail(params)["colours"]
    if colours is None:
        return list(params["classes"])
    return [f"{colour}_{shape}" for shape in params["classes"] for colour in colours]


def class_weights(params: dict) -> list[float] | None:
    """Per-class drawing probabilities (id order), or None for uniform."""
    lt = _long_tail(params)
    n = len(category_names(params))
    if lt["zipf_exponent"] == 0:
        return None
    rank = np.empty(n, dtype=np.float64)
    rank[np.random.default_rng([params["seed"], *_RANKING_STREAM]).permutation(n)] = np.arange(1, n + 1)
    weights = (rank + lt["zipf_offset"]) ** -lt["zipf_exponent"]
    return (weights / weights.sum()).tolist()


def frequency_group(image_count: int) -> str:
    """LVIS' group of a category in ``image_count`` training images: 'r' (<= 10), 'c' (<= 100), 'f'."""
    return "r" if image_count <= RARE_MAX_IMAGES else "c" if image_count <= COMMON_MAX_IMAGES else "f"


def params_hash(params: dict) -> str:
    blob = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a generated dataset, or None when absent/unreadable."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, digest: str) -> bool:
    manifest = read_manifest(root)
    if not manifest or manifest.get("hash") != digest:
        return False
    paths = ShapesPaths.under(root)
    for split, images in (("train", paths.train_images), ("val", paths.val_images)):
        ann = paths.train_annotations if split == "train" else paths.val_annotations
        expected = manifest["params"][f"num_{split}"]
        if not ann.is_file() or not images.is_dir() or len(os.listdir(images)) != expected:
            return False
    return True


def ensure_shapes_dataset(
    root: str | os.PathLike, *, progress: ProgressFn | bool | None = None, **params
) -> ShapesPaths:
    """Return the paths of the shapes dataset at ``root``, generating it if needed.

    ``params`` are those of ``shapes_params`` (all optional). ``progress``: a callback
    ``(split, done, total)``, ``True``/``False`` to force a rich progress bar on/off, or
    ``None`` for a bar on an interactive terminal once generation takes more than a moment.
    Raises ``DataError`` if ``root`` is a non-empty folder that this generator did not write.
    """
    root = Path(root).absolute()
    resolved = shapes_params(**params)
    digest = params_hash(resolved)
    if _is_complete(root, digest):
        return ShapesPaths.under(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root.parent / f".{root.name}.lock"):
        if _is_complete(root, digest):  # another process generated it while we waited
            return ShapesPaths.under(root)
        if root.exists() and any(root.iterdir()) and read_manifest(root) is None:
            raise DataError(
                f"{root} exists and is not a generated shapes dataset (no {MANIFEST}); refusing to "
                "overwrite it. Point dataset.root at an empty or new folder."
            )
        action = "regenerating (parameters changed)" if root.exists() else "generating"
        log.info("shapes dataset: %s %s (%d train + %d val images of %d px)", action, root,
                 resolved["num_train"], resolved["num_val"], resolved["image_size"])  # fmt: skip
        # We hold the lock, so leftovers of killed generations can go.
        for stale in root.parent.glob(f".{root.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.parent.glob(f".{root.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
        try:
            with _progress_callback(progress, resolved) as callback:
                _generate(tmp, resolved, digest, callback)
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            if root.exists():
                root.rename(old)
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ShapesPaths.under(root, regenerated=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # non-POSIX: no inter-process lock, the rename is still atomic
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _progress_callback(progress: ProgressFn | bool | None, params: dict) -> Iterator[ProgressFn | None]:
    if callable(progress) or progress is False:
        yield progress or None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if progress is None and not console.is_terminal:
        yield None
        return
    bar = Progress(TextColumn("shapes {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console, transient=True)  # fmt: skip
    tasks: dict[str, int] = {}
    started = time.perf_counter()
    shown = False

    def update(split: str, done: int, total: int) -> None:
        nonlocal shown
        # Only show a bar once generation takes more than a moment (tiny test splits stay quiet).
        if not shown and (progress is True or time.perf_counter() - started > 0.5):
            bar.start()
            shown = True
        if split not in tasks:
            tasks[split] = bar.add_task(split, total=total)
        bar.update(tasks[split], completed=done)

    try:
        yield update
    finally:
        if shown:
            bar.stop()


def _draw_params(params: dict) -> DrawParams:
    lt = _long_tail(params)
    shapes, colours = list(params["classes"]), None
    if lt["colours"] is not None:
        shapes = [shape for shape in params["classes"] for _ in lt["colours"]]
        colours = tuple(COLOUR_NAMES.index(c) for _ in params["classes"] for c in lt["colours"])
    weights = class_weights(params)
    return DrawParams(
        image_size=params["image_size"], classes=tuple(shapes),
        min_objects=params["min_objects"], max_objects=params["max_objects"],
        empty_fraction=params["empty_fraction"], size_mix=tuple(params["size_mix"]),
        min_object_size=params["min_object_size"], max_object_frac=params["max_object_frac"],
        max_occlusion=params["max_occlusion"], occlusion_prob=params["occlusion_prob"],
        noise=tuple(params["noise"]), class_colours=colours,
        class_weights=tuple(weights) if weights is not None else None,
    )  # fmt: skip


def _generate(out: Path, params: dict, digest: str, progress: ProgressFn | None) -> None:
    draw_params = _draw_params(params)
    paths = ShapesPaths.under(out)
    paths.train_annotations.parent.mkdir(parents=True)
    started = time.perf_counter()
    splits = {}
    for split, images_dir in (("train", paths.train_images), ("val", paths.val_images)):
        images_dir.mkdir()
        splits[split] = _generate_split(split, images_dir, draw_params, params, progress)
    if _long_tail(params)["lvis_format"]:
        _add_frequencies(splits)
    stats = {}
    for split, ann_file in (("train", paths.train_annotations), ("val", paths.val_annotations)):
        ann_file.write_text(json.dumps(splits[split], separators=(",", ":")))
        stats[split] = split_statistics(splits[split])
    manifest = {
        "generator": "rsdet.data.shapes",
        "version": GENERATOR_VERSION,
        "hash": digest,
        "params": params,
        "seconds": round(time.perf_counter() - started, 2),
        "stats": stats,
    }
    # Written last: a folder without a manifest is never mistaken for a complete dataset.
    paths.manifest.write_text(json.dumps(manifest, indent=2))


def _add_frequencies(splits: dict) -> None:
    """LVIS category fields from the training split, written into every split's categories."""
    images: dict[int, set] = {}
    instances: dict[int, int] = {}
    for ann in splits["train"]["annotations"]:
        images.setdefault(ann["category_id"], set()).add(ann["image_id"])
        instances[ann["category_id"]] = instances.get(ann["category_id"], 0) + 1
    for coco in splits.values():
        for cat in coco["categories"]:
            count = len(images.get(cat["id"], ()))
            cat.update(image_count=count, instance_count=instances.get(cat["id"], 0), frequency=frequency_group(count))


def _federated_lists(rng: np.random.Generator, present: list[int], num_categories: int, lt: dict) -> dict:
    """An image's LVIS lists: negatives drawn from the absent categories (absent by construction, so
    truly verified), and, in a fraction of the images with objects, one present category marked
    not exhaustively annotated."""
    absent = [c for c in range(1, num_categories + 1) if c not in set(present)]
    low, high = lt["negatives_per_image"]
    k = min(int(rng.integers(low, high + 1)), len(absent))
    negatives = sorted(int(c) for c in rng.choice(absent, size=k, replace=False)) if k else []
    not_exhaustive = []
    if present and rng.random() < lt["not_exhaustive_fraction"]:
        not_exhaustive = [int(rng.choice(sorted(set(present))))]
    return {"neg_category_ids": negatives, "not_exhaustive_category_ids": not_exhaustive}


def _generate_split(
    split: str, images_dir: Path, draw_params: DrawParams, params: dict, progress: ProgressFn | None
) -> dict:
    n = params[f"num_{split}"]
    size = params["image_size"]
    lt = _long_tail(params)
    names = category_names(params)
    images, annotations = [], []
    for index in range(n):
        # One generator per image: image i is the same whatever num_train/num_val are.
        rng = np.random.default_rng([params["seed"], _SPLIT_CODES[split], index])
        pixels, objects = draw_image(draw_params, rng)
        file_name = f"{index:06d}.jpg"
        Image.fromarray(pixels).save(images_dir / file_name, quality=params["jpeg_quality"])
        image_id = index + 1
        image = {"id": image_id, "file_name": file_name, "width": size, "height": size}
        if lt["lvis_format"]:  # drawn after the pixels, from the image's own generator
            image.update(_federated_lists(rng, [obj.label + 1 for obj in objects], len(names), lt))
        images.append(image)
        for obj in objects:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": obj.label + 1,
                   "segmentation": obj.segmentation, "area": obj.area, "bbox": obj.bbox}  # fmt: skip
            if not lt["lvis_format"]:  # LVIS files have no iscrowd (nothing is crowd)
                ann["iscrowd"] = 0
            ann["occluded"] = int(obj.occluded)
            annotations.append(ann)
        if progress is not None and (index % 25 == 24 or index == n - 1):
            progress(split, index + 1, n)
    supercategory = "shape" if lt["colours"] is None else None
    categories = [
        {"id": i + 1, "name": name, "supercategory": supercategory or name.split("_", 1)[1]}
        for i, name in enumerate(names)
    ]
    kind = "long-tailed LVIS-format shapes" if lt["lvis_format"] else "shapes"
    info = {"description": f"rsdet synthetic {kind}, {split} split", "version": str(GENERATOR_VERSION),
            "year": 2021, "contributor": "rsdet", "date_created": "generated"}  # fmt: skip
    return {"info": info, "licenses": [], "images": images, "annotations": annotations,
            "categories": categories}  # fmt: skip


def split_statistics(coco: dict) -> dict:
    """Counts of a COCO dict: images, empty images, instances per COCO size range and class."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_class = {name: 0 for name in names.values()}
    sizes = {"small": 0, "medium": 0, "large": 0}
    used = set()
    occluded = 0
    for ann in coco["annotations"]:
        used.add(ann["image_id"])
        per_class[names[ann["category_id"]]] += 1
        area = ann["area"]
        sizes["small" if area < SMALL_MAX**2 else "medium" if area < LARGE_MIN**2 else "large"] += 1
        occluded += int(ann.get("occluded", 0))
    stats = {
        "images": len(coco["images"]),
        "empty_images": len(coco["images"]) - len(used),
        "instances": len(coco["annotations"]),
        "occluded_instances": occluded,
        "sizes": sizes,
        "classes": per_class,
    }
    if all("frequency" in c for c in coco["categories"]) and coco["categories"]:
        groups = {g: {"classes": 0, "classes_present": 0, "instances": 0} for g in ("r", "c", "f")}
        for cat in coco["categories"]:
            group = groups[cat["frequency"]]
            count = per_class[cat["name"]]
            group["classes"] += 1
            group["classes_present"] += int(count > 0)
            group["instances"] += count
        stats["frequency_groups"] = groups
        stats["negative_labels"] = sum(len(img.get("neg_category_ids", ())) for img in coco["images"])
        stats["not_exhaustive_images"] = sum(bool(img.get("not_exhaustive_category_ids")) for img in coco["images"])
    return stats


def default_params() -> dict:
    """The default generation parameters (as written to the manifest)."""
    return shapes_params()

