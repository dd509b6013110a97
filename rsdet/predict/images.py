"""The images ``rsdet predict`` runs on, and their ground truth from a COCO annotation file (``--gt``).

Inputs are image files and folders (searched recursively, sorted, by suffix). Each image gets an
output name: a file's own name, or its path inside the folder it was found in, so two folders'
``0001.jpg`` do not overwrite each other. An image that cannot be read is reported by path and
skipped; the others are still predicted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from rsdet.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageInput:
    """One image to predict: where it is and the name of its outputs (a relative path, no suffix)."""

    path: Path
    name: str


def collect_images(inputs: list[Path]) -> list[ImageInput]:
    """Every image of ``inputs`` (files, and folders searched recursively), in a stable order."""
    found: list[ImageInput] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not files:
                raise DataError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); give image files "
                                "or a folder of images")
            prefix = path.name if len(inputs) > 1 else ""
            found += [ImageInput(p, str(PurePosixPath(prefix, *p.relative_to(path).with_suffix("").parts)))
                      for p in files]
        elif path.is_file():
            found.append(ImageInput(path, path.stem))
        else:
            raise DataError(f"{path} does not exist; give image files or folders of images")
    return _unique_names(found)


def _unique_names(images: list[ImageInput]) -> list[ImageInput]:
    seen: dict[str, int] = {}
    out = []
    for im in images:
        name = im.name
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[im.name]}"
        seen.setdefault(name, 0)
        out.append(ImageInput(im.path, name))
    return out


def read_image(path: Path) -> torch.Tensor:
    """The image as a (3, H, W) float tensor in [0, 1] (RGB), or a ``DataError`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise DataError(f"image {path} does not exist") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"image {path} cannot be read ({' '.join(str(exc).split())}); is it an image file?") from exc
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"image {path} is empty ({array.shape})")
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32) / 255.0)


class GroundTruth:
    """A COCO-format annotation file, looked up by image file: the image record whose ``file_name``
    is the input's path relative to its folder, or failing that, has the same file name."""

    def __init__(self, ann_file: Path):
        from rsdet.data.annotations import check_annotations, read_json

        self.path = Path(ann_file)
        data = check_annotations(read_json(self.path, "ground-truth (--gt)", ""), f"--gt {self.path}",
                                 need_file_name=False, check_masks=True)
        self.categories = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
        self.images = {int(im["id"]): im for im in data["images"]}
        self._by_path: dict[str, int] = {}
        self._by_name: dict[str, list[int]] = {}
        for image_id, im in self.images.items():
            file_name = str(im.get("file_name") or str(im.get("coco_url", "")).rsplit("/", 1)[-1])
            self._by_path[file_name] = image_id
            self._by_name.setdefault(PurePosixPath(file_name).name, []).append(image_id)
        self.annotations: dict[int, list[dict]] = {i: [] for i in self.images}
        for ann in data["annotations"]:
            self.annotations.setdefault(int(ann["image_id"]), []).append(ann)

    def find(self, image: ImageInput) -> int | None:
        """The image id of ``image`` in the file, or None."""
        rel = PurePosixPath(image.name).with_suffix(image.path.suffix).as_posix()
        for key in (rel, rel.split("/", 1)[-1]):
            if key in self._by_path:
                return self._by_path[key]
        ids = self._by_name.get(image.path.name, [])
        return ids[0] if len(ids) == 1 else None

    def instances(self, image_id: int, height: int, width: int, label_of: dict[int, int]) -> dict:
        """The image's annotations as drawable instances: boxes (x1, y1, x2, y2), labels (the detector's
        label of the category, or a new index past the detector's for categories it does not know),
        crowd flags and masks (None when no annotation has a segmentation)."""
        from rsdet.data.masks import decode_segmentation, has_segmentation

        anns = [a for a in self.annotations.get(image_id, []) if a.get("bbox") is not None]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([label_of.get(int(a["category_id"]), -1) for a in anns], dtype=torch.int64)
        crowd = torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool)
        masks = None
        if any(has_segmentation(a) for a in anns):
            masks = torch.zeros((len(anns), height, width), dtype=torch.bool)
            for k, a in enumerate(anns):
                if has_segmentation(a):
                    masks[k] = torch.from_numpy(decode_segmentation(a["segmentation"], height, width).astype(bool))
        return {"boxes": boxes, "labels": labels, "crowd": crowd, "masks": masks}


def write_images_json(path: Path, records: list[dict], categories: list[dict]) -> None:
    """The images the results refer to (COCO ``images`` and ``categories``), beside the results."""
    from rsdet.records import atomic_write_text

    atomic_write_text(path, json.dumps({"images": records, "categories": categories}, indent=1) + "\n")
