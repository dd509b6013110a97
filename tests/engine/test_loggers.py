"""The W&B logger's evaluation media and checkpoint artifact (rsdet/engine/loggers.py, rsdet/vis/wandb_media.py,
rsdet/vis/pr.py): unit checks, then a tiny real training run whose offline run folder is read back."""

import json
from pathlib import Path

import pytest
import torch

from rsdet.vis import wandb_media
from rsdet.vis.pr import CURVES, read_pr_curve

from wandb_offline import artifacts, history_keys, offline_run


def _det(boxes, labels, scores):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores, dtype=torch.float32)}


def test_per_image_scores_match_greedily_by_score_within_a_class():
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 1])}
    det = _det([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [50, 50, 60, 60]], [0, 0, 0, 1], [0.9, 0.95, 0.5, 0.8])
    # the 0.95 box takes GT 0 (IoU 0.9), the 0.9 duplicate finds it taken, the class-0 box on GT 1 has the wrong class
    assert wandb_media.match_at_iou(det, target) == 1
    scores = wandb_media.image_scores(det, target)
    assert scores["tp50"] == 1 and scores["precision50"] == 0.25 and scores["recall50"] == 0.5
    empty = wandb_media.image_scores(_det([], [], []), {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0)})
    assert empty["precision50"] == 1.0 and empty["recall50"] == 1.0


def test_pr_curves_are_read_from_the_metrics_pr_curve_block_and_malformed_blocks_are_skipped():
    import wandb

    recall = [round(0.01 * i, 2) for i in range(101)]
    block = {"recall": recall, "AP50": [1.0] * 50 + [-1.0] * 51, "AP75": [0.5] * 101, "AP": [-1.0] * 101}
    curves = read_pr_curve({"AP": 0.3, "pr_curve": block})
    assert curves == {"recall": recall, "AP50": block["AP50"], "AP75": block["AP75"], "AP": block["AP"]}
    plot = wandb_media.pr_plot(wandb, curves, "t")
    rows = plot.table.data  # [recall, line, precision]; undefined points (-1) and the all-undefined line left out
    assert {r[1] for r in rows} == {"IoU 0.50 (AP50)", "IoU 0.75 (AP75)"}
    assert [r[0] for r in rows if r[1] == "IoU 0.50 (AP50)"] == recall[:50]
    for broken in ({**block, "AP": block["AP"][:50]}, {**block, "AP75": ["x"] * 101}, {**block, "recall": None},
                   {**block, "AP50": [-1.0] * 101, "AP75": [-1.0] * 101}):
        assert read_pr_curve({"pr_curve": broken}) is None
    assert read_pr_curve({"AP": 0.3}) is None and read_pr_curve(None) is None


def test_wandb_objects_carry_boxes_masks_and_plots():
    import wandb

    image = torch.rand(3, 16, 20)
    masks = torch.zeros((1, 1, 16, 20))
    masks[0, 0, 2:6, 2:6] = 0.8
    det = {**_det([[1, 1, 8, 8]], [1], [0.7]), "masks": masks}
    target = {"boxes": torch.tensor([[1.0, 1, 8, 8]]), "labels": torch.tensor([1]), "masks": torch.zeros((1, 16, 20))}
    img = wandb_media.wandb_image(wandb, image, det, target, ["a", "b"])
    assert set(img._boxes) == {"predictions", "ground_truth"} and set(img._masks) == {"predictions", "ground_truth"}
    layer = wandb_media._box_layer(det["boxes"], det["labels"], ["a", "b"], det["scores"])
    assert layer["box_data"][0]["box_caption"] == "b 0.70" and layer["box_data"][0]["scores"]["score"] == pytest.approx(0.7)
    label_map = wandb_media._label_map(masks[:, 0] >= 0.5, torch.tensor([1]), [0], (16, 20))
    assert label_map[3, 3] == 2 and label_map[10, 10] == 0
    assert wandb_media.olrp_plot(wandb, {"oLRP": 0.7, "oLRP_FP": 0.2}, "t") is not None
    assert wandb_media.olrp_plot(wandb, {"AP": 0.3}, "t") is None
    assert wandb_media.pr_plot(wandb, {"recall": [0.0, 1.0], **{k: [-1.0, -1.0] for k, _ in CURVES}}, "t") is None


def test_the_artifact_holds_the_checkpoint_and_the_run_record_with_its_final_status(tmp_path):
    import wandb

    assert wandb_media.record_artifact(wandb, tmp_path, "m", "completed") is None  # no checkpoint yet
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"weights")
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "iteration": 4}))
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    artifact = wandb_media.record_artifact(wandb, tmp_path, "m", "completed")
    assert sorted(artifact.manifest.entries) == ["checkpoints/last.pt", "config.yaml", "run.json"]
    staged = Path(artifact.manifest.entries["run.json"].local_path)
    assert json.loads(staged.read_text()) == {"status": "completed", "iteration": 4}


def test_an_offline_training_run_holds_the_media_table_plots_and_checkpoint_artifact(trained_tiny_run):
    from rsdet.records import RunRecord

    run_dir, _, annotations = trained_tiny_run  # logger=wandb offline, logger.media_images=3 (tests/conftest.py)
    run = RunRecord(run_dir, create=False)
    folder = offline_run(run.dir).resolve()
    keys = history_keys(folder)
    assert keys["eval/predictions/_type"] == "table-file" and keys["eval/predictions/nrows"] == 3
    assert keys["eval/bbox/pr_curves_table/_type"] == "table-file"
    assert keys["eval/bbox/olrp_components_table/_type"] == "table-file"
    found = {a.type: a for a in artifacts(folder)}
    model = found["model"]
    files = {e.path: Path(e.local_path) for e in model.manifest.contents}
    assert set(files) == {"checkpoints/last.pt", "config.yaml", "run.json", "metrics.json", "history.jsonl"}
    for path in files.values():  # staged inside the offline run folder, not in the user's W&B data folder
        assert path.is_file() and folder in path.parents
    assert files["checkpoints/last.pt"].read_bytes() == (run.dir / "checkpoints" / "last.pt").read_bytes()
    assert json.loads(files["run.json"].read_text())["status"] == "completed"
    tables = [a for a in artifacts(folder) if a.type == "run_table"]
    entries = {e.path: Path(e.local_path) for a in tables for e in a.manifest.contents}
    table = json.loads(entries["eval/predictions.table.json"].read_text())
    assert table["columns"] == wandb_media.COLUMNS and len(table["data"]) == 3
    cell = table["data"][0][1]
    assert cell["_type"] == "image-file" and set(cell["boxes"]) == {"predictions", "ground_truth"}
    image_ids = [row[0] for row in table["data"]]
    assert image_ids == [im["id"] for im in json.loads(Path(annotations).read_text())["images"][:3]]
    # the PR plot is the final evaluation's own pr_curve block of metrics.json (no matching repeated)
    plot = json.loads(entries["eval/bbox/pr_curves_table.table.json"].read_text())
    assert plot["columns"] == ["step", "lineKey", "lineVal"]
    block = run.metrics["bbox"]["pr_curve"]
    for key, label in CURVES:
        points = [v for r, p in zip(block["recall"], block[key]) if p >= 0 for v in (r, p)]
        logged = [v for row in plot["data"] if row[1] == f"{label} ({key})" for v in (row[0], row[2])]
        assert points and logged == pytest.approx(points)
    assert run.info["complexity"]["parameters"] > 0 and run.info["complexity"]["flops_per_image"] > 0

