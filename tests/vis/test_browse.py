"""`rsdet data browse`: a split's ground truth drawn through the training loader's checks (rsdet/vis/browse.py)."""

import json

import numpy as np
import pytest
from PIL import Image

from rsdet.data.cli import main as data_main
from rsdet.vis.draw import CROWD_COLOR


def _coco(tmp_path, lvis=False):
    """Two 64 x 48 black images: a polygon square (category 1), an RLE crowd region (category 2)."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(images / name)
    crowd_rle = {"size": [48, 64], "counts": [48 * 40, 48 * 10, 48 * 14]}  # column-major: columns 40-49
    data = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48},
                       {"id": 9, "file_name": "b.png", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0,
                             "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]]},
                            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [40, 0, 10, 48], "area": 480,
                             "iscrowd": 1, "segmentation": crowd_rle}],
            "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "person"}]}
    if lvis:
        for im in data["images"]:
            im.update(neg_category_ids=[2], not_exhaustive_category_ids=[])
        data["annotations"].pop()  # LVIS has no crowd regions
    path = images / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_browse_draws_objects_masks_and_crowd_regions_of_an_annotation_file(tmp_path, capsys):
    ann = _coco(tmp_path)
    out = tmp_path / "drawn"
    assert data_main(["browse", str(ann), "--n", "5", "--out", str(out), "--display-size", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["7_a.png", "9_b.png"]
    pixels = np.asarray(Image.open(out / "7_a.png"))
    assert pixels.shape == (48 + 14, 64, 3)  # the title strip on top
    body = pixels[14:]
    assert body[15, 15].max() > 0  # the square's mask is tinted
    assert max(abs(int(v) - c) for v, c in zip(body[30, 45], CROWD_COLOR)) < 90  # the crowd region is grey
    assert body[40, 60].max() == 0  # background untouched
    assert "2 images drawn" in capsys.readouterr().out


def test_browse_picks_ids_and_reports_unknown_ones(tmp_path, capsys):
    ann = _coco(tmp_path)
    out = tmp_path / "one"
    assert data_main(["browse", str(ann), "--ids", "9", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["9_b.png"]
    assert data_main(["browse", str(ann), "--ids", "8", "--out", str(out)]) == 1
    assert "image ids [8] are not in" in capsys.readouterr().err


def test_browse_titles_name_lvis_negative_categories(tmp_path):
    from rsdet.data.coco_dataset import CocoDetectionDataset
    from rsdet.vis.browse import ground_truth, title

    ann = _coco(tmp_path, lvis=True)
    dataset = CocoDetectionDataset(ann.parent, ann)
    truth = ground_truth(dataset, 0, 48, 64)
    assert title(dataset, 0, truth) == "image 7: 1 object; neg: person"


def test_browse_of_the_embedded_dataset_config_and_bad_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RSDET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "shapes"
    small = ["--set", "generate.num_train=2", "--set", "generate.num_val=3", "--set", "generate.image_size=64"]
    assert data_main(["browse", "shapes", "--n", "2", "--out", str(out), *small]) == 0
    files = sorted(out.iterdir())
    assert len(files) == 2 and Image.open(files[0]).size == (384, 384 + 14)  # 64 px enlarged 6 times
    assert data_main(["browse", "no_such_dataset"]) == 1
    assert "neither a dataset config" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [(["browse", "x.json", "--n", "0"], "--n must be at least 1")])
def test_browse_rejects_bad_options(argv, message, capsys):
    assert data_main(argv) == 1
    assert message in capsys.readouterr().err
