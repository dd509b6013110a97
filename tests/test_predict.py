"""`rsdet predict` on a trained tiny run: PNGs, COCO results that `rsdet evaluate` scores, the ground truth
beside the detections, and its errors (unreadable images, no checkpoint, a checkpoint of another
detector or class count, untrusted config text)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from rsdet.cli import main as rsdet_main
from rsdet.predict.cli import build_parser
from rsdet.predict.model import read_run_config



@pytest.fixture
def trained(trained_tiny_run):
    """The shared tiny run (tests/conftest.py): run directory, validation images, their annotations."""
    return trained_tiny_run


def test_predict_writes_a_png_per_image_and_coco_results_that_evaluate(trained, tmp_path, capsys):
    from rsdet.evaluation import evaluate

    run, val, ann = trained
    out = tmp_path / "out"
    assert rsdet_main(["predict", str(run), str(val), "--out", str(out), "--score-thresh", "0.0"]) == 0
    names = sorted(p.stem for p in val.glob("*.jpg"))
    assert sorted(p.stem for p in out.glob("*.png")) == names
    assert Image.open(out / f"{names[0]}.png").size == (384, 384)  # 96 px enlarged 4 times
    results = json.loads((out / "predictions_bbox.json").read_text())
    images = json.loads((out / "images.json").read_text())
    assert [im["id"] for im in images["images"]] == list(range(1, len(names) + 1))
    assert results and {r["image_id"] for r in results} <= {im["id"] for im in images["images"]}
    assert [c["name"] for c in images["categories"]] == ["circle", "square", "triangle", "star", "cross", "crescent"]
    assert "detections above 0" in capsys.readouterr().out
    # the PNG holds exactly the picture drawn for the image (written by the background threads, rsdet's encoder)
    import numpy as np

    from rsdet.predict.cli import _picture
    from rsdet.predict.images import read_image
    from rsdet.predict.model import load_predictor

    predictor = load_predictor(run, device=torch.device("cpu"), score_thresh=0.0)
    image = read_image(val / f"{names[0]}.jpg")
    with torch.no_grad():
        picture = _picture(image, predictor(image), predictor, None, 1, {}, [], 384)
    assert np.array_equal(np.asarray(Image.open(out / f"{names[0]}.png")), picture.permute(1, 2, 0).numpy())
    # with the ground truth: its image ids, so the results score against it
    out_gt = tmp_path / "gt"
    assert rsdet_main(["predict", str(run / "checkpoints" / "last.pt"), str(val), "--out", str(out_gt), "--gt", str(ann),
                       "--score-thresh", "0.0", "--display-size", "0"]) == 0
    gt_ids = {im["file_name"]: im["id"] for im in json.loads(ann.read_text())["images"]}
    assert {Path(im["file_name"]).name: im["id"] for im in json.loads((out_gt / "images.json").read_text())["images"]} \
        == gt_ids
    assert Image.open(out_gt / f"{names[0]}.png").size == (96 * 2 + 4, 96 + 14)  # detections | ground truth
    metrics = evaluate(ann, out_gt / "predictions_bbox.json")
    assert 0.0 <= metrics["AP"] <= 1.0


def test_unreadable_images_are_listed_and_skipped(trained, tmp_path, capsys):
    run, val, _ = trained
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(next(val.glob("*.jpg")), folder / "good.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert rsdet_main(["predict", str(run), str(folder), "--out", str(out)]) == 1
    assert [p.name for p in out.glob("*.png")] == ["good.png"]
    err = capsys.readouterr().err
    assert "1 of 2 images could not be read" in err and "broken.jpg" in err


def test_a_run_without_checkpoint_and_missing_inputs_are_clear_errors(trained, tmp_path, capsys):
    run, val, _ = trained
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.yaml", bare / "config.yaml")
    shutil.copy(run / "run.json", bare / "run.json")
    assert rsdet_main(["predict", str(bare), str(val)]) == 1
    err = capsys.readouterr().err
    assert "has no checkpoint" in err and "status completed" in err
    assert rsdet_main(["predict", str(run), str(tmp_path / "nothing.jpg")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_checkpoint_of_another_detector_or_class_count_is_refused(trained, tmp_path, capsys):
    import yaml

    run, val, _ = trained
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("wandb"))
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["detector"]["name"] = "atss"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert rsdet_main(["predict", str(other), str(val)]) == 1
    assert "holds a detector=faster_rcnn model" in capsys.readouterr().err
    # a checkpoint without the detector's name: the weights themselves do not fit (no mask branch)
    payload = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    payload["extra"].pop("detector")
    torch.save(payload, other / "checkpoints" / "last.pt")
    cfg["detector"].update(name="mask_rcnn", mask={})
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert rsdet_main(["predict", str(other), str(val)]) == 1
    err = capsys.readouterr().err
    assert "does not fit detector=mask_rcnn" in err and "missing from the checkpoint (e.g. mask_branch." in err
    cfg["detector"].pop("mask")
    cfg["detector"]["name"] = "faster_rcnn"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    payload["extra"].update(num_classes=3, category_ids=[1, 2, 3], class_names=["a", "b", "c"])
    torch.save(payload, other / "checkpoints" / "last.pt")
    assert rsdet_main(["predict", str(other), str(val)]) == 1
    err = capsys.readouterr().err
    assert "weights of another shape" in err and "roi_head.cls_score.weight" in err


def test_config_text_is_never_resolved(tmp_path, monkeypatch):
    from rsdet.errors import ConfigError

    monkeypatch.setenv("RSDET_SECRET", "leaked")
    path = tmp_path / "config.yaml"
    path.write_text("detector: {name: faster_rcnn}\nnote: !!python/name:os.system ''\n")
    with pytest.raises(ConfigError, match="cannot be read as YAML"):
        read_run_config(path)
    path.write_text("detector: {name: faster_rcnn}\ntags: ['${oc.env:RSDET_SECRET}']\n")
    with pytest.raises(ConfigError, match=r"holds interpolations .* at tags\.0"):
        read_run_config(path)
    path.write_text("seed: 0\n")
    with pytest.raises(ConfigError, match="not an rsdet run config"):
        read_run_config(path)


def test_help_documents_every_option(capsys):
    assert rsdet_main(["predict", "--help"]) == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        assert action.help, action.dest
        for flag in action.option_strings:
            assert flag in text
    assert "RUN_OR_CHECKPOINT" in text and "IMAGE_OR_FOLDER" in text
