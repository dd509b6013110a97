"""The long-tailed, LVIS-format shapes dataset (conf/dataset/shapes_lvis.yaml): shape × colour classes,
frequency groups from the generated training split, federated image lists, LVIS evaluation on it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from pycocotools import mask as mask_utils

from rsdet.data.build import build_dataset, dataset_eval_info, dataset_paths
from rsdet.data.cli import main as data_main
from rsdet.data.sampling import build_train_sampler
from rsdet.data.shapes import category_names, class_weights, ensure_shapes_dataset, frequency_group, shapes_params
from rsdet.data.shapes_draw import COLOUR_NAMES, PALETTE
from rsdet.evaluation import evaluate

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset" / "shapes_lvis.yaml"
TINY = {"num_train": 40, "num_val": 12, "image_size": 96}


def _conf(**generate):
    cfg = OmegaConf.load(CONF)
    return OmegaConf.merge(cfg, {"generate": generate}) if generate else cfg


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shapes-lvis-cache")


@pytest.fixture(scope="module")
def default_split(cache):
    """The shipped configuration (800 + 200 images at 192 px), generated once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSDET_CACHE", str(cache))
        cfg = _conf()
        train_images, train_ann = dataset_paths(cfg, "train")
        _, val_ann = dataset_paths(cfg, "val")
        info = dataset_eval_info(cfg, "val")
    return cfg, train_images, json.loads(train_ann.read_text()), json.loads(val_ann.read_text()), info


def test_class_names_and_weights():
    params = shapes_params(**OmegaConf.to_container(_conf().generate))
    names = category_names(params)
    assert len(names) == 72 == len(set(names)) and names[:2] == ["red_circle", "green_circle"]
    assert names[-1] == "pink_crescent"
    weights = np.asarray(class_weights(params))
    # Zipf-like: sorted weights follow 1 / (rank + 8) ** 1.8.
    ranks = np.arange(1, 73)
    expected = (ranks + 8.0) ** -1.8
    assert np.allclose(np.sort(weights)[::-1], expected / expected.sum())
    assert class_weights(shapes_params()) is None and category_names(shapes_params())[0] == "circle"


def test_default_split_has_all_three_frequency_groups_in_train_and_val(default_split):
    cfg, _, train, val, info = default_split
    assert info["protocol"] == "lvis" and info["max_dets"] == 300
    assert Path(info["ann_file"]).parents[1].name.startswith("shapes_lvis-192px-800-200-seed0-")
    images_of = {}
    for ann in train["annotations"]:
        images_of.setdefault(ann["category_id"], set()).add(ann["image_id"])
    instances = Counter(a["category_id"] for a in train["annotations"])
    for cat in train["categories"]:
        count = len(images_of.get(cat["id"], ()))
        assert cat["image_count"] == count >= 1 and cat["instance_count"] == instances[cat["id"]]
        assert cat["frequency"] == ("r" if count <= 10 else "c" if count <= 100 else "f")
    assert val["categories"] == train["categories"]  # the groups are the training split's
    groups = Counter(c["frequency"] for c in train["categories"])
    assert len(train["categories"]) == cfg.num_classes == 72
    assert groups["r"] >= 15 and groups["c"] >= 15 and groups["f"] >= 5, groups
    freq = {c["id"]: c["frequency"] for c in val["categories"]}
    val_groups = Counter(freq[c] for c in {a["category_id"] for a in val["annotations"]})
    assert val_groups["r"] >= 10 and val_groups["c"] >= 10 and val_groups["f"] == groups["f"], val_groups


def test_federated_lists_are_truthful(default_split):
    _, _, train, val, _ = default_split
    for data in (train, val):
        present: dict = {}
        for ann in data["annotations"]:
            present.setdefault(ann["image_id"], set()).add(ann["category_id"])
            assert "iscrowd" not in ann  # LVIS format
        not_exhaustive = 0
        for img in data["images"]:
            pos = present.get(img["id"], set())
            assert 2 <= len(img["neg_category_ids"]) <= 5 and not pos & set(img["neg_category_ids"])
            assert len(img["not_exhaustive_category_ids"]) <= 1 and set(img["not_exhaustive_category_ids"]) <= pos
            not_exhaustive += bool(img["not_exhaustive_category_ids"])
        assert 0 < not_exhaustive < 0.12 * len(data["images"])


def test_lvis_evaluation_applies_the_federated_rules(default_split):
    _, _, _, val, _ = default_split
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in val["annotations"]]
    m = evaluate(val, perfect, protocol="lvis", max_dets=300)
    assert m["AP"] == m["APr"] == m["APc"] == m["APf"] == 1.0
    # Detections of categories neither annotated nor verified absent in an image are not judged ...
    unlisted = []
    for img in val["images"]:
        listed = set(img["neg_category_ids"]) | {a["category_id"] for a in val["annotations"] if a["image_id"] == img["id"]}
        other = min(set(range(1, 73)) - listed)
        unlisted.append({"image_id": img["id"], "category_id": other, "bbox": [2, 2, 20, 20], "score": 0.99})
    assert evaluate(val, perfect + unlisted, protocol="lvis")["AP"] == 1.0
    # ... but detections of verified-absent categories are false positives.
    negatives = [{"image_id": img["id"], "category_id": c, "bbox": [2, 2, 20, 20], "score": 0.99}
                 for img in val["images"] for c in img["neg_category_ids"]]
    m = evaluate(val, perfect + negatives, protocol="lvis")
    assert 0 <= m["APr"] < 1 and 0 <= m["APc"] < 1 and 0 <= m["APf"] < 1
    # Masks: the polygons as detections' RLE give a perfect segm AP.
    segm = []
    for det, ann in zip(perfect, val["annotations"]):
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 192, 192))
        segm.append({**det, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    assert evaluate(val, segm, iou_type="segm", protocol="lvis")["AP"] == 1.0


def test_colour_is_part_of_the_class(default_split):
    _, images, train, _, _ = default_split
    names = {c["id"]: c["name"] for c in train["categories"]}
    palette = np.asarray(PALETTE, dtype=np.float64)
    checked = 0
    for ann in train["annotations"][:150]:
        if ann["area"] < 60:
            continue
        pixels = np.asarray(Image.open(images / f"{ann['image_id'] - 1:06d}.jpg"), dtype=np.float64)
        mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 192, 192))).astype(bool)
        mean = pixels[mask].mean(0)
        nearest = COLOUR_NAMES[int(np.argmin(((palette - mean) ** 2).sum(1)))]
        assert names[ann["category_id"]].split("_")[0] == nearest, (ann["id"], mean)
        checked += 1
    assert checked > 50


def test_repeat_factor_sampling_on_shapes_lvis(default_split, cache, monkeypatch):
    cfg, _, train, _, _ = default_split
    monkeypatch.setenv("RSDET_CACHE", str(cache))
    ds = build_dataset(cfg, "train", train=True)
    assert ds.num_classes == 72 and ds.category_ids == list(range(1, 73))
    sampler = build_train_sampler(ds, cfg, seed=0)
    # t = 0.125 on 800 images: r(c) = max(1, sqrt(0.125 * 800 / image_count)), e.g. 10 for a single image.
    r = {c["id"] - 1: max(1.0, (0.125 * 800 / c["image_count"]) ** 0.5) for c in train["categories"]}
    expected = [max((r[label] for label in labels), default=1.0) for labels in ds.image_labels()]
    assert sampler.factors == pytest.approx(expected)
    assert sampler.factors.max() > 5 and sampler.expected_length > 1.3 * len(ds)
    assert frequency_group(0) == frequency_group(10) == "r" and frequency_group(11) == "c"
    assert frequency_group(100) == "c" and frequency_group(101) == "f"


def test_generation_is_deterministic_and_cached_by_parameters(tmp_path, cache):
    params = {**OmegaConf.to_container(_conf().generate), **TINY}
    a = ensure_shapes_dataset(tmp_path / "a", **params)
    b = ensure_shapes_dataset(tmp_path / "b", **params)
    assert a.train_annotations.read_bytes() == b.train_annotations.read_bytes()
    assert a.val_annotations.read_bytes() == b.val_annotations.read_bytes()
    assert (a.train_images / "000003.jpg").read_bytes() == (b.train_images / "000003.jpg").read_bytes()
    assert not ensure_shapes_dataset(tmp_path / "a", **params).regenerated
    other = ensure_shapes_dataset(tmp_path / "a", **{**params, "zipf_exponent": 1.0})
    assert other.regenerated and other.train_annotations.read_bytes() != b.train_annotations.read_bytes()


def test_cli_prints_frequency_groups(tmp_path, capsys):
    root = tmp_path / "cli"
    args = ["shapes_lvis", "--root", str(root), "--num-train", "30", "--num-val", "8", "--image-size", "96"]
    assert data_main(args) == 0
    out = capsys.readouterr().out
    assert "shapes_lvis dataset generated" in out and "frequent" in out and "rare" in out
    assert "negative (verified absent) labels" in out and "least" in out
    train = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert len(train["categories"]) == 72 and all(c["frequency"] in "rcf" for c in train["categories"])
