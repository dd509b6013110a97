"""CocoDetectionDataset on a hand-written COCO file full of defects, on LVIS-style naming, and on shapes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from rsdet.data.coco_dataset import CocoDetectionDataset, collate_fn
from rsdet.data.shapes import ensure_shapes_dataset
from rsdet.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

W, H = 40, 30


def _write_image(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)).save(path)


def _tiny_coco() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": W, "height": H},
            {"id": 20, "file_name": "b.png", "width": W, "height": H},  # no annotations: a negative
            {"id": 30, "file_name": "missing.png", "width": W, "height": H},  # not on disk
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],  # unsorted, non-contiguous
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 3, 10, 8], "iscrowd": 0, "area": 80,
             "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [30, 20, 20, 20], "iscrowd": 0, "area": 100,
             "segmentation": [[30, 20, 40, 20, 40, 30, 30, 30]]},  # extends past the image: clipped
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [5, 5, 0, 4], "iscrowd": 0, "area": 0},
            {"id": 4, "image_id": 10, "category_id": 7, "bbox": [45, 1, 5, 2], "iscrowd": 0, "area": 10},  # outside
            {"id": 5, "image_id": 10, "category_id": 7, "bbox": [0, 0, 20, 20], "iscrowd": 1, "area": 400,
             "segmentation": {"size": [H, W], "counts": [0, 600, 600]}},
            {"id": 6, "image_id": 30, "category_id": 3, "bbox": [1, 1, 4, 4], "iscrowd": 0, "area": 16,
             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
        ],
    }  # fmt: skip


@pytest.fixture
def tiny(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _write_image(images / "a.png", 0)
    _write_image(images / "b.png", 1)
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(_tiny_coco()))
    return images, ann


def test_defects_are_counted_and_targets_are_clean(tiny, caplog):
    images, ann = tiny
    with caplog.at_level(logging.WARNING, logger="rsdet.data.coco_dataset"):
        ds = CocoDetectionDataset(images, ann, with_masks=True)
    warnings = [r for r in caplog.records if "degenerate box(es)" in r.getMessage()]
    assert len(warnings) == 1 and "dropped 2 degenerate" in warnings[0].getMessage()
    assert ds.stats == {"images": 3, "boxes": 3, "dropped_degenerate_boxes": 2, "images_without_annotations": 1,
                        "crowd_boxes": 1, "ignored_category_boxes": 0, "masks_from_boxes": 0}  # fmt: skip
    assert ds.category_ids == [3, 7] and ds.category_names == ["cat", "dog"] and ds.num_classes == 2
    assert ds.image_ids == [10, 20, 30] and len(ds) == 3
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W) and 0 <= image.min() and image.max() <= 1
    expected = np.asarray(Image.open(images / "a.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    assert torch.allclose(image, torch.from_numpy(expected))
    assert target["image_id"] == 10 and target["orig_size"] == (H, W)
    assert torch.equal(target["boxes"], torch.tensor([[2.0, 3, 12, 11], [30, 20, 40, 30]]))
    assert target["labels"].tolist() == [1, 0]  # dog (id 7) → 1, cat (id 3) → 0
    assert target["iscrowd"].tolist() == [0, 0]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (2, H, W)
    assert masks[0].sum() == 80 and masks[0, 3:11, 2:12].all()
    assert masks[1].sum() == 100
    negative = ds[1][1]
    assert negative["boxes"].shape == (0, 4) and negative["labels"].shape == (0,)
    assert negative["masks"].shape == (0, H, W)
    assert "1 without objects" in ds.describe() and "2 degenerate" in ds.describe()


def test_missing_image_is_reported_lazily_and_by_verify_files(tiny):
    images, ann = tiny
    ds = CocoDetectionDataset(images, ann, config_key="dataset.val")
    with pytest.raises(DataError, match=r"missing\.png.*image id 30.*dataset\.val\.images"):
        ds[2]
    assert ds.verify_files(raise_error=False) == [images / "missing.png"]
    with pytest.raises(DataError, match=r"(?s)1 of 3 image files.*missing\.png"):
        ds.verify_files()


def test_horizontal_flip_moves_boxes_masks_and_pixels_together(tiny):
    images, ann = tiny
    plain = CocoDetectionDataset(images, ann, with_masks=True)
    flipped = CocoDetectionDataset(images, ann, with_masks=True, train=True, flip_prob=1.0)
    (img, tgt), (fimg, ftgt) = plain[0], flipped[0]
    assert torch.equal(fimg, img.flip(-1))
    assert torch.equal(ftgt["boxes"], torch.tensor([[W - 12.0, 3, W - 2, 11], [0, 20, 10, 30]]))
    assert torch.equal(ftgt["masks"], tgt["masks"].flip(-1))
    assert torch.equal(ftgt["labels"], tgt["labels"])
    never = CocoDetectionDataset(images, ann, train=False, flip_prob=1.0)  # no augmentation at test time
    assert torch.equal(never[0][1]["boxes"], tgt["boxes"])


def _mask_extent(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def _mixed_masks_coco() -> dict:
    """One image with a polygon, a compressed-RLE and an uncompressed-RLE object, a crowd region and an
    object without a segmentation; boxes are pycocotools' boxes of the masks."""
    disc = np.zeros((H, W), np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    disc[(xx - 28) ** 2 + (yy - 12) ** 2 <= 36] = 1
    blob = np.zeros((H, W), np.uint8)
    blob[18:27, 3:9] = 1
    blob[20:23, 9:14] = 1
    rle = mask_utils.encode(np.asfortranarray(disc))
    runs = np.diff(np.concatenate([[0], np.flatnonzero(np.diff(np.concatenate([[0], blob.ravel(order="F"), [2]])))]))
    triangle = [[2.0, 2.0, 17.0, 3.5, 6.5, 13.0]]
    anns = [
        {"id": 1, "category_id": 1, "segmentation": triangle},
        {"id": 2, "category_id": 2, "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}},
        {"id": 3, "category_id": 1, "segmentation": {"size": [H, W], "counts": runs.tolist()}},
        {"id": 4, "category_id": 2, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": [0, 300, 900]}},
        {"id": 5, "category_id": 2, "bbox": [30, 22, 6, 5]},
    ]
    for ann in anns:
        ann.update(image_id=10, iscrowd=ann.get("iscrowd", 0))
        if "bbox" not in ann:
            seg = ann["segmentation"]
            rles = (mask_utils.frPyObjects(seg, H, W) if isinstance(seg, list) or isinstance(seg["counts"], list)
                    else [{"size": seg["size"], "counts": seg["counts"].encode()}])
            merged = mask_utils.merge(rles) if isinstance(rles, list) else rles
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(merged)]
    return {"images": [{"id": 10, "file_name": "a.png", "width": W, "height": H}],
            "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], "annotations": anns}


def test_polygon_and_rle_masks_stay_aligned_with_boxes_under_flip(tiny):
    images, ann = tiny
    ann.write_text(json.dumps(_mixed_masks_coco()))
    plain = CocoDetectionDataset(images, ann, with_masks=True)
    assert plain.stats["crowd_boxes"] == 1 and plain.stats["masks_from_boxes"] == 1 and plain.stats["boxes"] == 4
    _, target = plain[0]
    masks = target["masks"]
    assert masks.shape == (4, H, W) and masks.dtype == torch.uint8
    assert masks[1].sum() == 113 and masks[2].sum() == 9 * 6 + 3 * 5  # the disc and the blob, as drawn
    assert masks[3].sum() == 6 * 5 and masks[3, 22:27, 30:36].all()  # no segmentation: the box
    flipped = CocoDetectionDataset(images, ann, with_masks=True, train=True, flip_prob=1.0)
    _, ftarget = flipped[0]
    assert torch.equal(ftarget["masks"], masks.flip(-1))
    for t in (target, ftarget):
        for box, mask in zip(t["boxes"], t["masks"]):
            assert torch.allclose(_mask_extent(mask), box, atol=1.0), (box, _mask_extent(mask))
    # Without the flip of the masks, the boxes of asymmetric objects would not match:
    assert not torch.allclose(_mask_extent(masks[0]), ftarget["boxes"][0], atol=1.0)


@pytest.mark.parametrize(
    "segmentation, problem",
    [
        ([[2, 2, 17, 3]], "polygon 0 has 2 point"),
        ([[2, 2, 17, 3, 6, 13, 5]], "polygon 0 has 7 coordinates, an odd count"),
        ({"size": [H, W], "counts": "PP`"}, "not a valid compressed RLE string"),
        ({"size": [H, W], "counts": [10, 20]}, "add up to 30 pixels, but size [30, 40] has 1200"),
        ({"size": [W, H], "counts": [H * W]}, "RLE size [40, 30] (height, width) differs from the image's [30, 40]"),
    ],
)
def test_malformed_masks_name_the_file_and_annotation_id(tiny, segmentation, problem):
    images, ann = tiny
    data = _mixed_masks_coco()
    data["annotations"][2]["segmentation"] = segmentation
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        CocoDetectionDataset(images, ann, with_masks=True)
    message = str(err.value)
    assert str(ann) in message and "annotations[2] (id 3) has a malformed 'segmentation'" in message
    assert problem in message
    assert CocoDetectionDataset(images, ann).stats["boxes"] == 4  # masks off: the segmentation is not read


def test_a_bad_crowd_rle_is_an_error_too(tiny):
    images, ann = tiny
    data = _mixed_masks_coco()
    data["annotations"][3]["segmentation"]["counts"] = [0, 300, 899]
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\[3\] \(id 4\) .*add up to 1199 pixels"):
        CocoDetectionDataset(images, ann, with_masks=True)


def test_rle_size_is_checked_against_the_pixels_when_the_image_record_has_no_size(tiny):
    images, ann = tiny
    data = _mixed_masks_coco()
    del data["images"][0]["width"], data["images"][0]["height"]
    data["annotations"][1]["segmentation"] = {"size": [W, H], "counts": [H * W]}
    ann.write_text(json.dumps(data))
    ds = CocoDetectionDataset(images, ann, with_masks=True)  # [40, 30] is self-consistent
    with pytest.raises(DataError, match=r"instances\.json: annotation id 2 \(image id 10\) .*RLE size \[40, 30\]"):
        ds[0]


def test_flip_probability_is_respected(tiny):
    images, ann = tiny
    ds = CocoDetectionDataset(images, ann, train=True, flip_prob=0.5)
    torch.manual_seed(0)
    flips = sum(int(ds[0][1]["boxes"][0, 0].item() != 2.0) for _ in range(200))
    assert 70 < flips < 130


def test_category_ids_fix_the_label_mapping(tiny):
    images, ann = tiny
    ds = CocoDetectionDataset(images, ann, category_ids=[7])
    assert ds.num_classes == 1 and ds.category_names == ["dog"]
    assert ds.stats["ignored_category_boxes"] == 3  # annotations 2, 3 and 6 are cats
    with pytest.raises(DataError, match=r"category ids \[99\]"):
        CocoDetectionDataset(images, ann, category_ids=[7, 99])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("annotations"), r"lacks the COCO list\(s\) \['annotations'\]"),
        (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\] \(id 1\) lacks required key\(s\) \['bbox'\]"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\] \(id 10\) has neither 'file_name' nor 'coco_url'"),
        (lambda d: d["annotations"][0].update(category_id=42), r"annotations\[0\] \(id 1\) has category_id 42"),
        (lambda d: d["annotations"][0].update(image_id=999), "refers to image_id 999"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, "x", 4]), "non-finite or non-numeric"),
        (lambda d: d["annotations"][0].update(bbox=[1, 1, 5, -2]), "negative width or height"),
        (lambda d: d["annotations"][1].update(bbox=[1, 1, float("nan"), 2]), r"annotations\[1\] \(id 2\).*non-finite"),
        (lambda d: d["annotations"][1].update(id=1), r"annotations\[1\] \(id 1\) repeats an annotation id"),
        (lambda d: d["categories"].append({"id": 7}), r"categories\[2\] \(id 7\) repeats a category id"),
        (lambda d: d["images"].append(dict(d["images"][0])), "more than once"),
    ],
)
def test_malformed_annotations_name_the_file_and_problem(tiny, mutate, message):
    images, ann = tiny
    data = _tiny_coco()
    mutate(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as err:
        CocoDetectionDataset(images, ann)
    assert str(ann) in str(err.value)


def test_invalid_json_reports_line_and_column(tiny):
    images, ann = tiny
    ann.write_text('{\n  "images": [],\n  "annotations": [,]\n}')
    with pytest.raises(DataError, match=r"not valid JSON: .* line 3, column 19") as err:
        CocoDetectionDataset(images, ann, config_key="dataset.train")
    assert str(ann) in str(err.value) and "dataset.train.annotations" in str(err.value)


def test_missing_paths_name_the_config_key(tiny, tmp_path):
    images, ann = tiny
    with pytest.raises(DataError, match=r"nope\.json does not exist.*dataset\.train\.annotations="):
        CocoDetectionDataset(images, tmp_path / "nope.json", config_key="dataset.train")
    with pytest.raises(DataError, match=r"image folder .*nowhere does not exist; set dataset\.val\.images="):
        CocoDetectionDataset(tmp_path / "nowhere", ann, config_key="dataset.val")
    with pytest.raises(DataError, match="is a folder"):
        CocoDetectionDataset(images, images)


def test_unreadable_image_is_a_data_error(tiny):
    images, ann = tiny
    (images / "a.png").write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match=r"a\.png cannot be read as an image"):
        CocoDetectionDataset(images, ann)[0]


def test_lvis_style_coco_url_and_missing_iscrowd(tmp_path):
    """LVIS v1: no file_name, images named by coco_url (from both COCO splits), no iscrowd key."""
    for split, name, seed in (("train2017", "000000000009.jpg", 0), ("val2017", "000000000139.jpg", 1)):
        (tmp_path / split).mkdir()
        _write_image(tmp_path / split / name, seed)
    _write_image(tmp_path / "000000000285.jpg", 2)  # flat layout works too
    data = {
        "images": [
            {"id": 9, "coco_url": "http://images.cocodataset.org/train2017/000000000009.jpg", "width": W, "height": H,
             "not_exhaustive_category_ids": [], "neg_category_ids": [2]},
            {"id": 139, "coco_url": "http://images.cocodataset.org/val2017/000000000139.jpg", "width": W, "height": H},
            {"id": 285, "coco_url": "http://images.cocodataset.org/val2017/000000000285.jpg", "width": W, "height": H},
        ],
        "categories": [{"id": 1, "name": "aerosol_can", "frequency": "c"}, {"id": 2, "name": "air_conditioner"}],
        "annotations": [{"id": 1, "image_id": 9, "category_id": 2, "bbox": [1, 1, 5, 5], "area": 25,
                         "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}],
    }  # fmt: skip
    ann = tmp_path / "lvis_v1_val.json"
    ann.write_text(json.dumps(data))
    ds = CocoDetectionDataset(tmp_path, ann, with_masks=True)
    assert ds.image_path(0) == tmp_path / "train2017" / "000000000009.jpg"
    assert ds.image_path(1) == tmp_path / "val2017" / "000000000139.jpg"
    assert ds.image_path(2) == tmp_path / "000000000285.jpg"
    assert ds.verify_files() == []
    _, target = ds[0]
    assert target["labels"].tolist() == [1] and target["masks"].sum() == 25
    assert ds.stats["crowd_boxes"] == 0 and ds.stats["images_without_annotations"] == 2
    assert ds.coco.getAnnIds(imgIds=[9]) == [1]


def test_shapes_boxes_agree_with_masks_with_and_without_flip(tmp_path):
    paths = ensure_shapes_dataset(tmp_path / "shapes", num_train=6, num_val=2, image_size=96, seed=1,
                                  empty_fraction=0.0)  # fmt: skip
    for flip in (0.0, 1.0):
        ds = CocoDetectionDataset(paths.train_images, paths.train_annotations, with_masks=True, train=True,
                                  flip_prob=flip)  # fmt: skip
        assert ds.num_classes == 6 and ds.stats["dropped_degenerate_boxes"] == 0
        for i in range(len(ds)):
            image, target = ds[i]
            assert image.shape == (3, 96, 96)
            for box, mask in zip(target["boxes"], target["masks"]):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                extent = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
                assert torch.equal(box, extent)
    images, targets = collate_fn([ds[0], ds[1]])
    assert isinstance(images, list) and len(images) == 2 and targets[1]["image_id"] == ds.image_ids[1]
    assert collate_fn([]) == ([], [])


def test_dataset_pickles_for_dataloader_workers(tiny):
    import pickle

    images, ann = tiny
    ds = CocoDetectionDataset(images, ann)
    _ = ds.coco  # the cached pycocotools index must not break pickling
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0][1]["boxes"], ds[0][1]["boxes"])
