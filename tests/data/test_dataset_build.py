"""build_dataset / dataset_eval_info from conf/dataset/*.yaml, path resolution, and `rsdet data`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from rsdet.data.build import build_dataset, cache_root, dataset_eval_info, dataset_paths
from rsdet.data.cli import main as data_main
from rsdet.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset"
COMMON_KEYS = {"name", "protocol", "num_classes", "min_size", "max_size", "max_dets", "with_masks", "root",
               "repeat_factor_threshold", "flip_prob",
               "train", "val"}  # fmt: skip
TINY_GENERATE = {"num_train": 6, "num_val": 3, "image_size": 64}


def _conf(name: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    return OmegaConf.merge(cfg, OmegaConf.create(overrides)) if overrides else cfg


def _folders(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if not p.name.startswith(".")]  # skip the generator's lock files


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RSDET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _coco_layout(root: Path) -> None:
    """A two-image dataset in the standard COCO 2017 layout under ``root``."""
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(root / split / "1.jpg")
        data = {"images": [{"id": 1, "file_name": "1.jpg", "width": 30, "height": 20}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0}],
                "categories": [{"id": 5, "name": "thing"}]}  # fmt: skip
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


@pytest.mark.parametrize("name", ["shapes", "shapes_lvis", "coco", "lvis", "coco_format"])
def test_every_dataset_config_follows_the_common_schema(name):
    cfg = _conf(name)
    assert COMMON_KEYS <= set(cfg.keys())
    assert set(cfg.train.keys()) == set(cfg.val.keys()) == {"images", "annotations"}
    assert cfg.protocol in ("coco", "lvis")
    text = (CONF / f"{name}.yaml").read_text()
    assert text.startswith("#")  # keys are documented at the top


def test_shapes_config_generates_into_the_cache_and_builds_both_splits(cache):
    cfg = _conf("shapes", generate=TINY_GENERATE)
    train = build_dataset(cfg, "train", train=True)
    val = build_dataset(cfg, "val", train=False, category_ids=train.category_ids)
    assert len(train) == 6 and len(val) == 3 and train.num_classes == val.num_classes == cfg.num_classes
    assert train.train and train.flip_prob == 0.5 and not val.train
    (root,) = _folders(cache)
    assert root.name.startswith("shapes-64px-6-3-seed0-")
    info = dataset_eval_info(cfg, "val")
    assert info == {"ann_file": str(root / "annotations" / "instances_val.json"), "protocol": "coco", "max_dets": 100}
    # Other generation parameters get their own folder (parallel sweeps never clobber each other).
    build_dataset(_conf("shapes", generate={**TINY_GENERATE, "seed": 1}), "val", train=False)
    assert len(_folders(cache)) == 2


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RSDET_CACHE", raising=False)
    assert cache_root() == tmp_path / ".cache" / "rsdet"
    images, ann = dataset_paths(_conf("shapes", root="data/my_shapes", generate=TINY_GENERATE), "train")
    assert images == tmp_path / "data" / "my_shapes" / "train" and ann.is_file()
    _coco_layout(tmp_path / "data" / "coco")
    ds = build_dataset(_conf("coco"), "val", train=False)  # root: data/coco, relative
    assert ds.ann_file == tmp_path / "data" / "coco" / "annotations" / "instances_val2017.json"
    assert ds.category_names == ["thing"] and len(ds) == 1


def test_coco_preset_follows_a_moved_root(tmp_path):
    _coco_layout(tmp_path / "elsewhere")
    ds = build_dataset(_conf("coco", root=str(tmp_path / "elsewhere")), "train", train=True)
    assert ds.image_dir == tmp_path / "elsewhere" / "train2017"
    assert dataset_eval_info(_conf("coco", root=str(tmp_path / "elsewhere")), "val")["protocol"] == "coco"


def test_lvis_preset_uses_the_lvis_protocol(tmp_path):
    root = tmp_path / "lvis_v1"
    (root / "annotations").mkdir(parents=True)
    empty = {"images": [], "annotations": [], "categories": []}
    (root / "annotations" / "lvis_v1_val.json").write_text(json.dumps(empty))
    info = dataset_eval_info(_conf("lvis", root=str(root)), "val")
    assert info == {"ann_file": str(root / "annotations" / "lvis_v1_val.json"), "protocol": "lvis", "max_dets": 300}


def test_missing_dataset_paths_say_which_key_to_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"dataset\.train\.images is not set; pass dataset\.train\.images="):
        build_dataset(_conf("coco_format"), "train", train=True)
    (tmp_path / "imgs").mkdir()
    partial = _conf("coco_format", train={"images": "imgs"})
    with pytest.raises(DataError, match=r"dataset\.train\.annotations is not set"):
        build_dataset(partial, "train", train=True)
    missing_images = r"data/coco/train2017 \(dataset\.train\.images\) does not exist.*dataset\.root="
    with pytest.raises(DataError, match=missing_images):
        build_dataset(_conf("coco"), "train", train=True)
    (tmp_path / "data" / "coco" / "val2017").mkdir(parents=True)
    with pytest.raises(DataError, match=r"instances_val2017\.json \(dataset\.val\.annotations\) does not exist"):
        dataset_eval_info(_conf("coco"), "val")
    with pytest.raises(DataError, match="unknown dataset split"):
        build_dataset(_conf("coco"), "test", train=False)


def test_inconsistent_configs_are_rejected(cache):
    with pytest.raises(DataError, match=r"dataset\.num_classes=3 but .* defines 6 categories"):
        build_dataset(_conf("shapes", num_classes=3, generate=TINY_GENERATE), "val", train=False)
    with pytest.raises(DataError, match=r"dataset\.generate: .*colour"):
        build_dataset(_conf("shapes", generate={**TINY_GENERATE, "colour": "red"}), "val", train=False)
    with pytest.raises(DataError, match=r"dataset\.protocol='voc'"):
        dataset_eval_info(_conf("shapes", protocol="voc", generate=TINY_GENERATE), "val")
    plain = OmegaConf.to_container(_conf("shapes", generate=TINY_GENERATE), resolve=True)
    assert len(build_dataset(plain, "val", train=False)) == 3  # plain dicts work too


def test_cli_generates_shapes_and_checks_files(tmp_path, capsys):
    root = tmp_path / "cli_shapes"
    assert data_main(["shapes", "--root", str(root), "--num-train", "5", "--num-val", "2", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "generated" in out and "small" in out and "crescent" in out
    assert data_main(["shapes", "--root", str(root), "--num-train", "5", "--num-val", "2", "--image-size", "64"]) == 0
    assert "cached" in capsys.readouterr().out
    ann = root / "annotations" / "instances_val.json"
    assert data_main(["check", str(ann), "--images", str(root / "val"), "--verify-files"]) == 0
    assert "all 2 image files present" in capsys.readouterr().out
    assert data_main(["check", str(tmp_path / "absent.json")]) == 1
    assert "absent.json does not exist" in capsys.readouterr().err
    assert data_main([]) == 2
