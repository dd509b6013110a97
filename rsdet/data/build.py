"""Datasets from the ``dataset`` config group (``conf/dataset/*.yaml``).

Every dataset config shares one schema::

    name, protocol (coco | lvis), num_classes (null = from annotations), min_size, max_size,
    with_masks, flip_prob, repeat_factor_threshold (null = off; see rsdet.data.sampling), max_dets,
    root, train: {images, annotations}, val: {images, annotations}

plus a ``generate:`` block for the embedded shapes datasets (``shapes``, ``shapes_lvis``), whose
``train``/``val`` paths are filled in by the generator. Relative paths resolve against the directory rsdet was started in
(Hydra's original working directory when running under Hydra); ``RSDET_CACHE`` overrides the cache
root (default ``.cache/rsdet``) where generated datasets live.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rsdet.data.coco_dataset import CocoDetectionDataset
from rsdet.data.shapes import ShapesPaths, ensure_shapes_dataset, params_hash, shapes_params
from rsdet.errors import DataError
from rsdet.evaluation.io import DEFAULT_MAX_DETS, PROTOCOLS

__all__ = ["build_dataset", "dataset_eval_info", "cache_root", "resolve_path", "dataset_paths"]

SPLITS = ("train", "val")


def base_dir() -> Path:
    """The directory relative paths mean: Hydra's original cwd when under Hydra, else the cwd."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            from hydra.utils import get_original_cwd

            return Path(get_original_cwd())
    except (ImportError, ValueError):
        pass
    return Path.cwd()


def resolve_path(path: str | os.PathLike) -> Path:
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else base_dir() / p


def cache_root() -> Path:
    """Where generated datasets are cached: ``$RSDET_CACHE`` or ``.cache/rsdet``."""
    return resolve_path(os.environ.get("RSDET_CACHE") or ".cache/rsdet")


def _as_config(cfg: DictConfig | Mapping) -> DictConfig:
    if isinstance(cfg, DictConfig):
        return cfg
    if isinstance(cfg, Mapping):
        return OmegaConf.create(dict(cfg))
    raise DataError(f"dataset config must be a mapping, got {type(cfg).__name__}")


def _value(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` with '???' (mandatory, unset) and absent both read as None."""
    if key not in cfg or OmegaConf.is_missing(cfg, key):
        return None
    return cfg[key]


def shapes_root(cfg: DictConfig) -> Path:
    """Explicit ``root``, else a per-parameter folder ``<cache>/shapes[_lvis]-...`` (jobs with different
    generation parameters, e.g. in a parallel sweep, never overwrite each other's data)."""
    root = _value(cfg, "root")
    if root:
        return resolve_path(root)
    params = shapes_params(**_generate_block(cfg))
    kind = "shapes_lvis" if params.get("lvis_format") else "shapes"
    tag = f"{kind}-{params['image_size']}px-{params['num_train']}-{params['num_val']}-seed{params['seed']}"
    return cache_root() / f"{tag}-{params_hash(params)[:8]}"


def _generate_block(cfg: DictConfig) -> dict:
    gen = OmegaConf.to_container(cfg.generate, resolve=True) if _value(cfg, "generate") else {}
    try:
        shapes_params(**gen)
    except TypeError as err:  # an unknown key in dataset.generate
        raise DataError(f"dataset.generate: {err}; see conf/dataset/shapes.yaml and shapes_lvis.yaml for the "
                        "keys") from err
    return gen


def ensure_generated(cfg: DictConfig | Mapping) -> ShapesPaths | None:
    """Generate the dataset if the config has a ``generate`` block; None for on-disk datasets."""
    cfg = _as_config(cfg)
    if not _value(cfg, "generate"):
        return None
    return ensure_shapes_dataset(shapes_root(cfg), **_generate_block(cfg))


def dataset_paths(cfg: DictConfig | Mapping, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of ``split``, generating the shapes dataset if needed."""
    cfg = _as_config(cfg)
    if split not in SPLITS:
        raise DataError(f"unknown dataset split {split!r}; expected one of {SPLITS}")
    generated = ensure_generated(cfg)
    if generated is not None:
        return getattr(generated, f"{split}_images"), getattr(generated, f"{split}_annotations")
    node = _value(cfg, split)
    name = _value(cfg, "name") or "dataset"
    out = []
    for key in ("images", "annotations"):
        value = _value(node, key) if isinstance(node, DictConfig) else None
        if not value:
            example = "path/to/images" if key == "images" else "path/to/instances.json"
            raise DataError(f"{name}: dataset.{split}.{key} is not set; pass dataset.{split}.{key}={example}")
        out.append(resolve_path(value))
    images, annotations = out
    # Presets derive both paths from `root`, so moving the whole dataset is one override.
    alt = " (or dataset.root=<folder> for the standard layout)" if _value(cfg, "root") else ""
    if not images.is_dir():
        raise DataError(
            f"{name}: image folder {images} (dataset.{split}.images) does not exist; download the "
            f"dataset there or pass dataset.{split}.images=<folder>{alt}"
        )
    if not annotations.is_file():
        raise DataError(
            f"{name}: annotation file {annotations} (dataset.{split}.annotations) does not exist; "
            f"download it there or pass dataset.{split}.annotations=<file.json>{alt}"
        )
    return images, annotations


def build_dataset(
    dataset_cfg: DictConfig | Mapping,
    split: str,
    train: bool,
    *,
    category_ids: Sequence[int] | None = None,
) -> CocoDetectionDataset:
    """The ``split`` ('train' | 'val') dataset of a ``conf/dataset/*.yaml`` config.

    ``train`` turns on augmentation (horizontal flip with ``dataset.flip_prob``, default 0.5).
    ``category_ids`` fixes the label mapping (pass the training set's to a validation set).
    """
    cfg = _as_config(dataset_cfg)
    images, annotations = dataset_paths(cfg, split)
    flip = _value(cfg, "flip_prob")
    dataset = CocoDetectionDataset(
        images,
        annotations,
        with_masks=bool(_value(cfg, "with_masks")),
        train=train,
        flip_prob=0.5 if flip is None else float(flip),
        category_ids=category_ids,
        config_key=f"dataset.{split}",
    )
    expected = _value(cfg, "num_classes")
    if expected is not None and int(expected) != dataset.num_classes:
        raise DataError(
            f"dataset.num_classes={expected} but {annotations} defines {dataset.num_classes} "
            "categories; set dataset.num_classes=null to take it from the annotations"
        )
    return dataset


def dataset_eval_info(dataset_cfg: DictConfig | Mapping, split: str = "val") -> dict:
    """What the evaluator needs: ``{ann_file, protocol, max_dets}``; generates shapes if needed.

    ``max_dets: null`` (or 0) takes the protocol's default from the evaluator."""
    cfg = _as_config(dataset_cfg)
    protocol = str(_value(cfg, "protocol") or "coco").lower()
    if protocol not in PROTOCOLS:
        raise DataError(f"dataset.protocol={protocol!r} is not one of {PROTOCOLS}")
    _, annotations = dataset_paths(cfg, split)
    max_dets = _value(cfg, "max_dets")
    return {
        "ann_file": str(annotations),
        "protocol": protocol,
        "max_dets": int(max_dets) if max_dets else DEFAULT_MAX_DETS[protocol],
    }
