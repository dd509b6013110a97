"""A detection dataset over any COCO-format annotation file (COCO, LVIS v1, the shapes dataset).

Items are ``(image, target)`` at the image's original size; resizing and normalisation belong to
the model (torchvision's ``GeneralizedRCNNTransform``), so the evaluator's boxes and the loader's
boxes share one coordinate frame: absolute pixels of the original image.

Bad input is reported with ``DataError`` naming the file, the record and the fix (the checks of
:mod:`rsdet.data.annotations`, shared with the evaluator). Recoverable defects are counted in
``stats`` instead: boxes of zero width/height (after clipping to the image) are dropped (one warning),
crowd regions are excluded from the training targets (their masks too), images without annotations
are kept as negatives; with masks, an annotation without a segmentation gets its box as mask
(``stats['masks_from_boxes']``). Masks are decoded per item (:mod:`rsdet.data.masks`), never up front.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from rsdet.data.annotations import check_annotations, read_json
from rsdet.data.masks import has_segmentation, instance_masks
from rsdet.errors import DataError

__all__ = ["CocoDetectionDataset", "collate_fn", "load_annotation_json"]

log = logging.getLogger(__name__)


def load_annotation_json(path: str | os.PathLike, *, hint: str = "", check_masks: bool = False) -> dict:
    """Read and check a COCO-format annotation file for training (:mod:`rsdet.data.annotations`), or
    raise ``DataError`` naming the file, the offending record and ``hint`` (how to point elsewhere).
    ``check_masks`` also checks every ``segmentation`` (polygons and RLE)."""
    data = read_json(path, "annotation file", hint)
    return check_annotations(data, f"annotation file {path}", need_file_name=True, check_masks=check_masks,
                             hint=hint)


class CocoDetectionDataset(Dataset):
    """COCO-format detection dataset.

    ``__getitem__(i)`` returns ``(image, target)``: image ``FloatTensor[3, H, W]`` RGB in [0, 1]
    at the original size; target ``boxes FloatTensor[n, 4]`` (x1, y1, x2, y2 absolute pixels),
    ``labels LongTensor[n]`` contiguous in [0, num_classes), ``image_id int``, ``orig_size
    (h, w)``, ``iscrowd LongTensor[n]`` (all 0: crowd regions are excluded) and, when
    ``with_masks``, ``masks ByteTensor[n, H, W]`` (1 inside; row k is the object of ``boxes[k]``;
    decoded from polygons or RLE for this item only, flipped together with image and boxes).

    ``category_ids`` fixes the label mapping (contiguous index → dataset category id), e.g. to
    give a validation split the training split's mapping; annotations of other categories are
    then ignored (counted in ``stats['ignored_category_boxes']``). Default: every category in
    the file, sorted by id.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        ann_file: str | os.PathLike,
        *,
        with_masks: bool = False,
        train: bool = False,
        flip_prob: float = 0.5,
        category_ids: Sequence[int] | None = None,
        config_key: str | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.with_masks = with_masks
        self.train = train
        self.flip_prob = float(flip_prob) if train else 0.0
        # e.g. "dataset.train": lets messages name the config key to fix.
        self._key = config_key
        hint = f"set {config_key}.annotations=<path to the .json>" if config_key else ""
        if not self.image_dir.is_dir():
            raise DataError(
                f"image folder {self.image_dir} does not exist"
                + (f"; set {config_key}.images=<folder with the images>" if config_key else "")
            )
        data = load_annotation_json(self.ann_file, hint=hint, check_masks=with_masks)
        self._data = data
        self._coco: COCO | None = None

        categories = {int(c["id"]): c for c in data["categories"]}
        if category_ids is None:
            category_ids = sorted(categories)
        unknown = [c for c in category_ids if int(c) not in categories]
        if unknown:
            raise DataError(f"category ids {unknown[:10]} requested but not in 'categories' of {self.ann_file}")
        self.category_ids: list[int] = [int(c) for c in category_ids]
        self.category_names: list[str] = [str(categories[c].get("name", c)) for c in self.category_ids]
        self.num_classes = len(self.category_ids)
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}

        self.image_ids: list[int] = [int(img["id"]) for img in data["images"]]  # unique: checked on load
        self._images = {int(img["id"]): img for img in data["images"]}
        self._build_targets(data["annotations"], label_of)

    # -- annotation indexing -------------------------------------------------------------------
    def _build_targets(self, anns: list, label_of: dict) -> None:
        per_image: dict[int, list[tuple[list[float], int, dict]]] = {i: [] for i in self.image_ids}
        degenerate, crowd, ignored, from_boxes = [], 0, 0, 0
        for ann in anns:  # ids, references and boxes were checked on load
            image_id, cat = int(ann["image_id"]), int(ann["category_id"])
            if ann.get("iscrowd", 0):  # LVIS has no iscrowd key: never crowd
                crowd += 1
                continue
            if cat not in label_of:
                ignored += 1
                continue
            box = self._xyxy(ann, self._images[image_id])
            if box is None:
                degenerate.append(ann)
                continue
            per_image[image_id].append((box, label_of[cat], ann))
            from_boxes += int(self.with_masks and not has_segmentation(ann))
        if degenerate:
            ex = degenerate[0]
            log.warning(
                "%s: dropped %d degenerate box(es): zero width/height or outside the image (e.g. annotation id %s, bbox %s)",
                self.ann_file, len(degenerate), ex.get("id"), ex.get("bbox"),
            )  # fmt: skip
        self._targets = per_image
        self.stats = {
            "images": len(self.image_ids),
            "boxes": sum(len(v) for v in per_image.values()),
            "dropped_degenerate_boxes": len(degenerate),
            "images_without_annotations": sum(1 for v in per_image.values() if not v),
            "crowd_boxes": crowd,
            "ignored_category_boxes": ignored,
            "masks_from_boxes": from_boxes,
        }
        if from_boxes:
            log.warning("%s: %d annotation(s) have no 'segmentation'; their boxes serve as masks",
                        self.ann_file, from_boxes)

    def _xyxy(self, ann: dict, img: dict) -> list[float] | None:
        """COCO [x, y, w, h] (checked finite, w, h >= 0) → [x1, y1, x2, y2] clipped to the image;
        None if nothing of it is left (zero width or height, or entirely outside the image)."""
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1, x2, y2 = x, y, x + w, y + h
        if "width" in img and "height" in img:
            x1, x2 = min(max(x1, 0.0), img["width"]), min(max(x2, 0.0), img["width"])
            y1, y2 = min(max(y1, 0.0), img["height"]), min(max(y2, 0.0), img["height"])
        if not (x2 > x1 and y2 > y1):
            return None
        return [x1, y1, x2, y2]

    # -- public helpers ------------------------------------------------------------------------
    @property
    def coco(self) -> COCO:
        """The pycocotools ``COCO`` index of the annotation file (built on first use)."""
        if self._coco is None:
            coco = COCO()
            coco.dataset = self._data
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                coco.createIndex()
            self._coco = coco
        return self._coco

    def image_path(self, index: int) -> Path:
        """Where image ``index`` should be. LVIS v1 has ``coco_url`` instead of ``file_name``:
        ``.../train2017/x.jpg`` is looked up as ``image_dir/train2017/x.jpg``, then ``image_dir/x.jpg``."""
        img = self._images[self.image_ids[index]]
        if "file_name" in img:
            return self.image_dir / img["file_name"]
        parts = str(img["coco_url"]).rstrip("/").split("/")
        nested = self.image_dir / parts[-2] / parts[-1] if len(parts) >= 2 else None
        flat = self.image_dir / parts[-1]
        return nested if nested is not None and nested.is_file() else flat

    def image_labels(self) -> list[list[int]]:
        """The contiguous labels of each item's training targets (crowd, degenerate and ignored-category
        annotations excluded), in item order; e.g. for repeat-factor sampling (:mod:`rsdet.data.sampling`)."""
        return [[e[1] for e in self._targets[image_id]] for image_id in self.image_ids]

    def verify_files(self, *, max_report: int = 5, raise_error: bool = True) -> list[Path]:
        """Check every image file exists; raise ``DataError`` listing the first few missing."""
        missing = [p for p in (self.image_path(i) for i in range(len(self))) if not p.is_file()]
        if missing and raise_error:
            shown = "\n  ".join(str(p) for p in missing[:max_report])
            key = f"; check {self._key}.images" if self._key else ""
            raise DataError(
                f"{len(missing)} of {len(self)} image files listed in {self.ann_file} are missing "
                f"under {self.image_dir}{key}. First missing:\n  {shown}"
            )
        return missing

    def describe(self) -> str:
        s = self.stats
        return (
            f"{self.ann_file.name}: {s['images']} images ({s['images_without_annotations']} without "
            f"objects), {s['boxes']} boxes, {self.num_classes} classes; dropped "
            f"{s['dropped_degenerate_boxes']} degenerate and {s['crowd_boxes']} crowd boxes"
        )

    def __repr__(self) -> str:
        return f"CocoDetectionDataset({self.describe()})"

    def __len__(self) -> int:
        return len(self.image_ids)

    # -- items ---------------------------------------------------------------------------------
    def _load_image(self, index: int) -> np.ndarray:
        """The image as an HWC uint8 RGB array."""
        path = self.image_path(index)
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except FileNotFoundError as err:
            key = f"{self._key}.images" if self._key else "the image folder"
            raise DataError(
                f"image file {path} (image id {self.image_ids[index]} of {self.ann_file}) is missing; "
                f"check that {key} points at the folder holding these images"
            ) from err
        except Image.DecompressionBombError as err:  # PIL's limit on pixels, against decompression bombs
            raise DataError(f"image file {path} is too large to decode safely ({err}; image id "
                            f"{self.image_ids[index]} of {self.ann_file}); resize it, or drop it from the annotation "
                            "file") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
            # malformed or truncated files: PIL raises any of these depending on the format
            raise DataError(f"image file {path} cannot be read as an image ({type(err).__name__}: {err}; image id "
                            f"{self.image_ids[index]} of {self.ann_file}); re-download or replace it") from err

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.image_ids[index]
        array = self._load_image(index)
        h, w = int(array.shape[0]), int(array.shape[1])
        img = self._images[image_id]
        if ("width" in img and img["width"] != w) or ("height" in img and img["height"] != h):
            # the boxes were clipped to the annotated size: they would not fit these pixels
            raise DataError(
                f"image file {self.image_path(index)} is {w}x{h} pixels but {self.ann_file} says image id "
                f"{image_id} is {img.get('width')}x{img.get('height')}; the annotation file does not belong "
                "to these images (or an image was replaced)"
            )
        entries = self._targets[image_id]
        boxes = np.asarray([e[0] for e in entries], dtype=np.float32).reshape(-1, 4)
        masks = None
        if self.with_masks:
            masks = instance_masks([e[2] for e in entries], [e[0] for e in entries], h, w, source=self.ann_file)
        if self.flip_prob > 0 and torch.rand(()).item() < self.flip_prob:
            # Pixel x of width w maps to w - 1 - x, so box edges x map to w - x.
            array = array[:, ::-1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
            masks = masks[:, :, ::-1] if masks is not None else None
        # Augment and convert in numpy: torch's flip/permute/float on small tensors are many times
        # slower on a busy CPU (intra-op threads), which dominated loading at CPU-demo batch sizes.
        image = array.transpose(2, 0, 1).astype(np.float32, order="C")
        image *= np.float32(1.0 / 255.0)
        target: dict = {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes)),
            "labels": torch.tensor([e[1] for e in entries], dtype=torch.int64),
            "image_id": image_id,
            "orig_size": (h, w),
            "iscrowd": torch.zeros(len(entries), dtype=torch.int64),
        }
        if masks is not None:
            target["masks"] = torch.from_numpy(np.ascontiguousarray(masks))
        return torch.from_numpy(image), target


def collate_fn(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images of different sizes apart: the detector's transform batches them itself."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
