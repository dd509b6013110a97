"""The embedded shapes dataset: determinism, caching, atomicity and COCO validity."""

from __future__ import annotations

import contextlib
import filecmp
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from rsdet.data import shapes
from rsdet.data.polygons import mask_to_polygons, polygon_signed_area
from rsdet.data.shapes import CLASSES, ensure_shapes_dataset, read_manifest
from rsdet.errors import DataError

SMALL = dict(num_train=24, num_val=8, image_size=128, seed=3)

# pycocotools' decode trips numpy 2's `copy=False` deprecation on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One moderately sized dataset shared by the read-only checks below."""
    root = tmp_path_factory.mktemp("shapes") / "ds"
    return ensure_shapes_dataset(root, num_train=60, num_val=20, image_size=192, seed=0, progress=False)


def _load(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_same_seed_gives_identical_files(tmp_path):
    a = ensure_shapes_dataset(tmp_path / "a", **SMALL)
    b = ensure_shapes_dataset(tmp_path / "b", **SMALL)
    for split in ("train", "val"):
        names = sorted(p.name for p in getattr(a, f"{split}_images").iterdir())
        assert names == sorted(p.name for p in getattr(b, f"{split}_images").iterdir())
        match, mismatch, errors = filecmp.cmpfiles(
            getattr(a, f"{split}_images"), getattr(b, f"{split}_images"), names, shallow=False
        )
        assert not mismatch and not errors
        assert getattr(a, f"{split}_annotations").read_bytes() == getattr(b, f"{split}_annotations").read_bytes()


def test_other_seed_differs_and_images_do_not_depend_on_split_size(tmp_path):
    a = ensure_shapes_dataset(tmp_path / "a", **SMALL)
    other = ensure_shapes_dataset(tmp_path / "b", **{**SMALL, "seed": 4})
    assert a.train_annotations.read_bytes() != other.train_annotations.read_bytes()
    # Image i depends on (seed, split, i) only: a longer split starts with the same images.
    longer = ensure_shapes_dataset(tmp_path / "c", **{**SMALL, "num_train": 30})
    assert (longer.train_images / "000005.jpg").read_bytes() == (a.train_images / "000005.jpg").read_bytes()


def test_reuses_cache_and_regenerates_on_parameter_change(tmp_path):
    root = tmp_path / "ds"
    first = ensure_shapes_dataset(root, **SMALL)
    assert first.regenerated
    stamp = first.train_annotations.stat().st_mtime_ns
    again = ensure_shapes_dataset(root, **SMALL)
    assert not again.regenerated
    assert again.train_annotations.stat().st_mtime_ns == stamp
    changed = ensure_shapes_dataset(root, **{**SMALL, "num_val": 5})
    assert changed.regenerated
    assert len(list(changed.val_images.iterdir())) == 5
    assert read_manifest(root)["params"]["num_val"] == 5
    # Deleting files from a cached dataset makes it incomplete: it is rebuilt.
    next(changed.train_images.iterdir()).unlink()
    assert ensure_shapes_dataset(root, **{**SMALL, "num_val": 5}).regenerated
    assert not list(tmp_path.glob(".ds.partial-*")) and not list(tmp_path.glob(".ds.old-*"))


def test_interrupted_generation_never_looks_complete(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    real = shapes._generate_split

    def crash_on_val(split, *args, **kwargs):
        if split == "val":
            raise KeyboardInterrupt
        return real(split, *args, **kwargs)

    monkeypatch.setattr(shapes, "_generate_split", crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes_dataset(root, **SMALL)
    assert not root.exists()
    assert not list(tmp_path.glob(".ds.partial-*"))
    # A generation killed hard leaves its temporary folder; the next one cleans it up.
    (tmp_path / ".ds.partial-99999" / "train").mkdir(parents=True)
    monkeypatch.setattr(shapes, "_generate_split", real)
    paths = ensure_shapes_dataset(root, **SMALL)
    assert paths.regenerated and paths.manifest.is_file()
    assert not list(tmp_path.glob(".ds.partial-*"))


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a generated shapes dataset"):
        ensure_shapes_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    "bad, message",
    [({"classes": ["circle", "blob"]}, "unknown shape classes"), ({"size_mix": [0, 0, 0]}, "size_mix"),
     ({"min_objects": 4, "max_objects": 2}, "min_objects")],
)  # fmt: skip
def test_bad_parameters_are_reported(tmp_path, bad, message):
    with pytest.raises(DataError, match=message):
        ensure_shapes_dataset(tmp_path / "x", **{**SMALL, **bad})


def test_annotations_are_valid_coco_and_match_the_masks(generated):
    for ann_file, images_dir, n in ((generated.train_annotations, generated.train_images, 60),
                                    (generated.val_annotations, generated.val_images, 20)):  # fmt: skip
        coco = _load(ann_file)
        assert len(coco.getImgIds()) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(images_dir / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (192, 192)
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"], list)
            mask = coco.annToMask(ann)
            assert mask.sum() == ann["area"] > 0
            assert np.allclose(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))), ann["bbox"])
            # Occlusion never punches a hole into a visible region (COCO polygons cannot hold one).
            loops = mask_to_polygons(mask, keep_holes=True)
            assert all(polygon_signed_area(p) > 0 for p in loops)


def test_objects_are_painted_where_the_masks_are(generated):
    """The visible mask of an object is one saturated colour plus noise/shading, unlike the grey
    background: check its pixels are far more saturated than the background's."""
    coco = _load(generated.val_annotations)
    checked = 0
    for img in coco.loadImgs(coco.getImgIds()[:10]):
        pixels = np.asarray(Image.open(generated.val_images / img["file_name"]), dtype=np.float32)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        union = np.zeros(pixels.shape[:2], bool)
        for ann in anns:
            union |= coco.annToMask(ann).astype(bool)
        if not anns or (~union).sum() < 100:
            continue
        chroma = pixels.max(-1) - pixels.min(-1)
        background = np.median(chroma[~union])
        for ann in anns:
            m = coco.annToMask(ann).astype(bool)
            fill = np.median(pixels[m], axis=0)
            if fill.max() - fill.min() > 100:  # coloured (not the white/black palette entries)
                assert np.median(chroma[m]) > background + 60
                checked += 1
    assert checked >= 5


def test_statistics_cover_every_size_range_occlusion_and_negatives(generated):
    stats = read_manifest(generated.root)["stats"]
    train, val = stats["train"], stats["val"]
    assert train["images"] == 60 and val["images"] == 20
    assert all(train["sizes"][k] > 0 for k in ("small", "medium", "large"))
    assert all(val["sizes"][k] > 0 for k in ("small", "medium", "large"))
    assert train["occluded_instances"] > 0
    assert all(v > 0 for v in train["classes"].values())
    coco = json.loads(generated.train_annotations.read_text())
    per_image = {}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert max(per_image.values()) <= 6
    assert len(per_image) + train["empty_images"] == 60


def test_every_image_can_be_empty_or_full(tmp_path):
    empty = ensure_shapes_dataset(tmp_path / "e", **{**SMALL, "num_train": 5, "empty_fraction": 0.999})
    assert json.loads(empty.train_annotations.read_text())["annotations"] == []
    few = ensure_shapes_dataset(tmp_path / "f", **{**SMALL, "classes": ["star", "cross"], "empty_fraction": 0.0})
    coco = json.loads(few.train_annotations.read_text())
    assert [c["name"] for c in coco["categories"]] == ["star", "cross"]
    assert {a["image_id"] for a in coco["annotations"]} == {img["id"] for img in coco["images"]}


def test_progress_is_reported_per_split(tmp_path):
    calls = []

    def record(split, done, total):
        calls.append((split, done, total))

    ensure_shapes_dataset(tmp_path / "p", **SMALL, progress=record)
    assert calls[-1] == ("val", 8, 8) and ("train", 24, 24) in calls
    assert all(0 < done <= total for _, done, total in calls)
    # A forced rich bar must also work when stderr is not a terminal (CI logs).
    assert ensure_shapes_dataset(tmp_path / "q", **SMALL, progress=True).regenerated
