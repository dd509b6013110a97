"""`rsdet train detector.init=torchvision:...` end to end: a run started from a torchvision Faster R-CNN state
dict (random weights, built here, never downloaded) trains from those weights (docs/visualisation.md,
"Weights from torchvision"). At a learning rate of 1e-12 two SGD steps cannot move a weight by 1e-6, so
the checkpoint still holds the file's weights where rsdet's own initialisation would differ by far more."""

from pathlib import Path

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from rsdet import train_cli
from rsdet.engine.checkpoint import load_checkpoint
from rsdet.models.torchvision_init import InitSpec, torchvision_to_rsdet
from rsdet.records import find_runs

SHAPES_CLASSES = 6  # the embedded shapes data


def test_a_training_run_starts_from_the_torchvision_file(tiny_run, tmp_path):
    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=SHAPES_CLASSES + 1)
    path = tmp_path / "fasterrcnn.pth"
    torch.save(tv.state_dict(), path)
    overrides = [o for o in tiny_run if not o.startswith(("schedule.max_iters", "schedule.batch_size", "dataset.m"))]
    assert train_cli.main([*overrides, "loss=ce", "schedule=1x", "schedule.max_iters=2", "schedule.batch_size=1",
                           "schedule.ranking_group=null", "schedule.lr=1e-12", "dataset.min_size=64",
                           "dataset.max_size=64", "eval.max_images=1", "detector.backbone.pretrained=null",
                           "detector.rpn.box_coder_weights=[1,1,1,1]",
                           f"detector.init=torchvision:fasterrcnn_resnet50_fpn:{path}"]) == 0
    run = find_runs(Path("outputs"))[0]
    assert run.info["status"] == "completed" and run.info["iteration"] == 2
    weights = load_checkpoint(run.dir / "checkpoints" / "last.pt")["model"]
    want, unused = torchvision_to_rsdet(tv.state_dict(), InitSpec("fasterrcnn_resnet50_fpn", False, path),
                                        SHAPES_CLASSES)
    assert not unused and len(want) > 250  # 295 tensors: ResNet-50, FPN, RPN, box head
    for key, value in want.items():  # backbone, FPN, RPN and box head: the file's, after two steps
        assert torch.allclose(weights[key].float(), value.float(), atol=1e-6), key
    # frozen batch norm kept the file's statistics (rsdet trains BN when it has no ImageNet weights)
    assert torch.equal(weights["backbone.body.bn1.running_var"], tv.backbone.body.bn1.running_var)
