"""``rsdet data browse``: draw the ground truth of a dataset split, to check annotations before training.

The dataset is a config of ``conf/dataset/`` by name (``shapes``, ``shapes_lvis``, ``coco``, ``lvis``,
``coco_format``), a dataset ``.yaml`` of the same schema, or a COCO/LVIS-format annotation ``.json``
(images in ``--images``, default its folder). The file goes through the training loader's checks
(:class:`rsdet.data.coco_dataset.CocoDetectionDataset`), so what fails here would fail in training.
Each picture shows every annotation of the image, crowd regions included (grey, filled, captioned
``crowd``), with its class name and mask; its title gives the image id, the counts and, for LVIS
files, the categories verified absent (``neg``) and those not exhaustively annotated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from rsdet.errors import DataError


@dataclass
class BrowseOptions:
    dataset: str
    split: str = "val"
    n: int = 16
    out: Path | None = None
    images: Path | None = None
    root: str | None = None
    seed: int = 0
    ids: list[int] | None = None
    display_size: int | None = None
    overrides: tuple[str, ...] = ()


def dataset_config(name_or_path: str, root: str | None = None, overrides: tuple[str, ...] = ()) -> DictConfig:
    """The dataset config of a ``conf/dataset`` name or a ``.yaml`` path, with ``root`` and ``KEY=VALUE``
    overrides (keys relative to the dataset config, e.g. ``val.annotations=x.json``) applied."""
    from rsdet.paths import conf_dir

    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"dataset config {path} does not exist")
        cfg = OmegaConf.load(path)
    else:
        shipped = conf_dir() / "dataset" / f"{name_or_path}.yaml"
        if not shipped.is_file():
            names = sorted(p.stem for p in (conf_dir() / "dataset").glob("*.yaml"))
            raise DataError(f"{name_or_path!r} is neither a dataset config ({', '.join(names)}), a dataset .yaml nor "
                            "an annotation .json file")
        cfg = OmegaConf.load(shipped)
    # the dataset configs read detector.masks for with_masks; browsing always draws the masks there are
    cfg = OmegaConf.merge(OmegaConf.create({"detector": {"masks": True}}), {"dataset": cfg}).dataset
    if root:
        cfg.root = root
    for item in overrides:
        if "=" not in item:
            raise DataError(f"--set {item!r} is not KEY=VALUE (e.g. --set val.annotations=path/to/instances.json)")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else None  # numbers, lists, null as on Hydra's command line
        except yaml.YAMLError:
            value = text
        OmegaConf.update(cfg, key.removeprefix("dataset."), value, merge=True)
    return cfg


def open_split(opts: BrowseOptions):
    """(dataset, label) of what ``opts`` names: a ``CocoDetectionDataset`` and a name for the output folder."""
    from rsdet.data.coco_dataset import CocoDetectionDataset

    path = Path(opts.dataset).expanduser()
    if path.suffix == ".json":
        images = opts.images or path.parent
        return CocoDetectionDataset(images, path, with_masks=False), path.stem
    from rsdet.data.build import build_dataset

    cfg = dataset_config(opts.dataset, opts.root, opts.overrides)
    cfg_resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg_resolved.with_masks = False  # masks are decoded here, crowd regions included
    dataset = build_dataset(cfg_resolved, opts.split, train=False)
    return dataset, f"{cfg_resolved.get('name') or path.stem}-{opts.split}"


def pick(dataset, n: int, seed: int, ids: list[int] | None) -> list[int]:
    """Indices of the images to draw: the given image ids, or ``n`` drawn at random with ``seed`` (in
    file order)."""
    if ids:
        where = {image_id: k for k, image_id in enumerate(dataset.image_ids)}
        unknown = [i for i in ids if i not in where]
        if unknown:
            raise DataError(f"image ids {unknown[:10]} are not in {dataset.ann_file}")
        return [where[i] for i in ids]
    count = min(int(n), len(dataset))
    return sorted(random.Random(seed).sample(range(len(dataset)), count))


def ground_truth(dataset, index: int, height: int, width: int) -> dict:
    """Every annotation of image ``index`` (crowd regions too) as drawable instances."""
    from rsdet.data.masks import decode_segmentation, has_segmentation

    image_id = dataset.image_ids[index]
    anns = dataset.coco.imgToAnns.get(image_id, [])
    label_of = {cid: k for k, cid in enumerate(dataset.category_ids)}
    anns = [a for a in anns if int(a["category_id"]) in label_of]
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([label_of[int(a["category_id"])] for a in anns], dtype=torch.int64)
    crowd = torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool)
    masks = None
    if any(has_segmentation(a) for a in anns):
        masks = torch.zeros((len(anns), height, width), dtype=torch.bool)
        for k, a in enumerate(anns):
            if has_segmentation(a):
                masks[k] = torch.from_numpy(decode_segmentation(a["segmentation"], height, width).astype(bool))
    return {"boxes": boxes, "labels": labels, "crowd": crowd, "masks": masks}


def title(dataset, index: int, truth: dict) -> str:
    """``image <id>: <n> objects, <c> crowd`` and, for LVIS records, the federated category lists."""
    image_id = dataset.image_ids[index]
    crowd = int(truth["crowd"].sum())
    objects = len(truth["boxes"]) - crowd
    text = f"image {image_id}: {objects} object{'' if objects == 1 else 's'}" + (f", {crowd} crowd" if crowd else "")
    record = dataset.coco.imgs.get(image_id, {})
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in dataset.coco.dataset["categories"]}
    for key, label in (("neg_category_ids", "neg"), ("not_exhaustive_category_ids", "not exhaustive")):
        cats = record.get(key) or []
        if cats:
            shown = ", ".join(names.get(int(c), str(c)) for c in cats[:4]) + (" ..." if len(cats) > 4 else "")
            text += f"; {label}: {shown}"
    return text


def browse(opts: BrowseOptions, progress=None) -> tuple[Path, list[Path]]:
    """Draw the chosen images of the split; returns (output folder, written PNGs)."""
    from rsdet.predict.images import read_image
    from rsdet.vis.draw import DISPLAY_SIZE, display_factor, draw_instances, save_png, titled

    dataset, label = open_split(opts)
    chosen = pick(dataset, opts.n, opts.seed, opts.ids)
    out = opts.out or Path("outputs") / "browse" / label
    display = DISPLAY_SIZE if opts.display_size is None else opts.display_size
    task = progress.add_task("drawing", total=len(chosen), info="") if progress is not None else None
    written = []
    for index in chosen:
        path = dataset.image_path(index)
        image = read_image(path)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        truth = ground_truth(dataset, index, h, w)
        drawn = draw_instances(image, truth["boxes"], truth["labels"], dataset.category_names, masks=truth["masks"],
                               crowd=truth["crowd"], factor=display_factor(h, w, display))
        written.append(save_png(titled(drawn, title(dataset, index, truth)),
                                out / f"{dataset.image_ids[index]}_{path.stem}.png"))
        if progress is not None:
            progress.advance(task)
    return out, written
