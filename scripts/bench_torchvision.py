"""rsdet's R50-FPN Faster R-CNN against torchvision's ``fasterrcnn_resnet50_fpn``, per training iteration
and per inference, in one process, interleaved (issue 21, item 3; docs/performance.md).

    python scripts/bench_torchvision.py                         # loss=ce and loss=rs, 2 x 512 px, default threads
    python scripts/bench_torchvision.py --losses ce --iters 10 --threads 1
    python scripts/bench_torchvision.py --size 256 --iters 2 --warmup 1   # a quick check that it runs

Both models are built in this process from random weights (no download): torchvision's
``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` and rsdet's ``detector=faster_rcnn
schedule=1x`` with the settings below brought to torchvision's, so that the two run the same network
on the same number of anchors, proposals and RoIs:

- images: ``--batch`` (2) synthetic ``--size`` (512) px square images with 2-8 random boxes of 80 classes
  each, resized to ``--size`` by both transforms (``min_size = max_size = --size``);
- backbone: ResNet-50 + FPN (P2-P6, 256 channels), trainable batch norm and every stage trainable
  (what torchvision builds without weights; rsdet: ``detector.backbone.norm=bn trainable_stages=5
  pretrained=null``);
- RPN: anchors 32-512 x {0.5, 1, 2}, IoU 0.7 / 0.3, NMS 0.7, 2000 pre-NMS anchors per level and 1000
  proposals per image in training, 1000 / 1000 at test (rsdet's recipe; torchvision's
  ``rpn_post_nms_top_n_train`` set to 1000 from its 2000); 256 sampled anchors at 1:1 (CE);
- RoI head: GT boxes appended to the proposals, IoU 0.5, 512 sampled RoIs at 1:3 (CE), RoIAlign 7 x 7
  with 2 samples per bin, a two-layer 1024-d MLP, 81 softmax logits, class-specific deltas; test score
  0.05, NMS 0.5, 100 detections;
- optimiser: SGD, lr 1e-4, momentum 0.9, weight decay 1e-4, for both.

What still differs is the loss arithmetic (rsdet's CE recipe: L1 on the RPN and GIoU x 10 on the
RoIs, torchvision: smooth L1 on both), rsdet's minimum IoU of 0.3 for low-quality RPN matches, and
in ``loss=rs`` the RS recipe itself: no sampler, so every proposal (1000 per image + the GT boxes)
goes through the box head, the cost of the method. The RS model's sigmoid classifier starts at the
prior 0.01 (``loss.prior_prob=0.01``): with a zero bias every random-weight score would be 0.5, above
the RS test threshold 0.40, and inference would time NMS over all 80 classes of every proposal
(at the prior, as with the CE model's 1/81 softmax, no candidate passes the threshold; a trained model
passes few).

Timing: one training iteration is forward + backward + optimiser step; one inference is the eval-mode
forward of the batch under ``torch.no_grad``. Rounds alternate which model goes first; the table
gives medians of the wall clock and of the process CPU time (every thread; robust to other processes
on a shared machine), and rsdet / torchvision ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _machine import cpu_model  # noqa: E402

NUM_CLASSES = 80


def rsdet_overrides(size: int) -> list[str]:
    """The rsdet side of the matched settings (module docstring)."""
    return ["detector=faster_rcnn", "schedule=1x", "device=cpu", f"detector.min_size={size}",
            f"detector.max_size={size}", "detector.backbone.pretrained=null", "detector.backbone.norm=bn",
            "detector.backbone.trainable_stages=5", "detector.rpn.pre_nms_top_n_train=2000",
            "detector.rpn.post_nms_top_n_train=1000", "detector.rpn.pre_nms_top_n_test=1000",
            "detector.rpn.post_nms_top_n_test=1000"]


def build_rsdet(loss: str, size: int) -> torch.nn.Module:
    from hydra import compose, initialize_config_dir

    from rsdet.models import build_detector
    from rsdet.train_cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"loss={loss}", *rsdet_overrides(size),
                                          *(["loss.prior_prob=0.01"] if loss != "ce" else [])])
    torch.manual_seed(0)
    return build_detector(cfg, NUM_CLASSES)


def build_torchvision(size: int) -> torch.nn.Module:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                                   min_size=size, max_size=size, rpn_pre_nms_top_n_train=2000,
                                   rpn_post_nms_top_n_train=1000, rpn_pre_nms_top_n_test=1000,
                                   rpn_post_nms_top_n_test=1000, box_batch_size_per_image=512,
                                   box_positive_fraction=0.25, box_score_thresh=0.05, box_nms_thresh=0.5,
                                   box_detections_per_img=100)


def make_batch(batch: int, size: int, seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """Images in [0, 1] and targets with labels in [0, 80) (rsdet's convention; torchvision gets +1)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand((3, size, size), generator=g))
        n = int(torch.randint(2, 9, (1,), generator=g))
        xy = torch.rand((n, 2), generator=g) * size * 0.7
        wh = (torch.rand((n, 2), generator=g) * 0.6 + 0.05) * size
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, NUM_CLASSES, (n,), generator=g)})
    return images, targets


class Timed:
    """One model's training step and inference, with their wall and process CPU times."""

    def __init__(self, name: str, model: torch.nn.Module, targets: list[dict], torchvision_labels: bool):
        self.name = name
        self.model = model
        self.targets = [{"boxes": t["boxes"], "labels": t["labels"] + (1 if torchvision_labels else 0)}
                        for t in targets]
        self.optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                         momentum=0.9, weight_decay=1e-4)
        self.times: dict[str, list[tuple[float, float]]] = {"train": [], "infer": []}

    def _loss(self, images) -> torch.Tensor:
        out = self.model(images, self.targets)
        terms = out[0] if isinstance(out, tuple) else out  # rsdet: (terms, stats); torchvision: a loss dict
        return sum(terms.values())

    def train_step(self, images, record: bool) -> None:
        self.model.train()
        wall, cpu = time.perf_counter(), time.process_time()
        loss = self._loss(images)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if record:
            self.times["train"].append((time.perf_counter() - wall, time.process_time() - cpu))
        if not torch.isfinite(loss):
            raise SystemExit(f"{self.name}: the loss became {float(loss)}; lower the benchmark's lr")

    def infer(self, images, record: bool) -> None:
        self.model.eval()
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            self.model(images)
        if record:
            self.times["infer"].append((time.perf_counter() - wall, time.process_time() - cpu))

    def median(self, kind: str, which: int) -> float:
        return statistics.median(t[which] for t in self.times[kind])


def bench(loss: str, images, targets, size: int, iters: int, warmup: int) -> list[str]:
    rsdet = Timed(f"rsdet loss={loss}", build_rsdet(loss, size), targets, torchvision_labels=False)
    tv = Timed("torchvision", build_torchvision(size), targets, torchvision_labels=True)
    for kind in ("train", "infer"):
        for i in range(warmup + iters):
            order = (rsdet, tv) if i % 2 == 0 else (tv, rsdet)
            for m in order:
                (m.train_step if kind == "train" else m.infer)(images, record=i >= warmup)
    rows = []
    for kind, label in (("train", "training iteration"), ("infer", "inference")):
        r_wall, t_wall = rsdet.median(kind, 0), tv.median(kind, 0)
        r_cpu, t_cpu = rsdet.median(kind, 1), tv.median(kind, 1)
        rows.append(f"| {loss} | {label} | {r_wall:.3f} | {t_wall:.3f} | {r_wall / t_wall:.2f}x | "
                    f"{r_cpu:.3f} | {t_cpu:.3f} | {r_cpu / t_cpu:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", default="ce,rs", help="rsdet losses to compare (comma-separated)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (both transforms)")
    parser.add_argument("--batch", type=int, default=2, help="images per batch")
    parser.add_argument("--iters", type=int, default=7, help="timed rounds per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images, targets = make_batch(args.batch, args.size)
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    header = [f"`python scripts/bench_torchvision.py{' ' + shown if shown else ''}` "
              f"on {time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core {platform.machine()} CPU ({cpu_model()}), "
              f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}; {args.batch} x "
              f"{args.size} px, medians of {args.iters} interleaved rounds after {args.warmup} warm-up (seconds):",
              "",
              "| rsdet loss | measured | rsdet wall | torchvision wall | ratio | rsdet CPU | torchvision CPU | ratio |",
              "|---|---|---|---|---|---|---|---|"]
    print("\n".join(header), flush=True)
    rows = []
    for loss in args.losses.split(","):
        rows += bench(loss, images, targets, args.size, args.iters, args.warmup)
    print()
    print("\n".join(header + rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
