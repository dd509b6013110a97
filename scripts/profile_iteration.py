"""Where one training iteration of a detector goes: the network vs everything around it.

    python scripts/profile_iteration.py                          # every CPU preset, RS and the standard loss
    python scripts/profile_iteration.py --detectors atss --losses rs --iters 20
    python scripts/profile_iteration.py --top 25 --detectors paa --losses rs   # + torch.profiler's hottest ops
    python scripts/profile_iteration.py --markdown               # the table of docs/performance.md
    python scripts/profile_iteration.py -- detector.backbone.depth=18   # extra Hydra overrides after `--`

Each case builds the model, the optimiser, the data loader, the NaN watch and the history sums the
way ``rsdet train`` does (``rsdet.engine``) and runs the training step itself, in one thread, with
every part of the step in a named region whose **thread CPU time** (``time.thread_time``, the time
this thread ran, which other processes on the machine do not inflate) is summed exclusively: a
nested region pauses its parent. Regions (docs/performance.md, "What an iteration costs"):

- network (``net/*``): the forward of the backbone, the FPN and the heads' layers (RPN conv head,
  RoIAlign + box MLP + predictors, mask FCN, dense towers, YOLACT head and protonet), and the backward
  through them (``net/backward``);
- everything else: ``data`` (the loader's next batch, copied to the device), ``transform`` (resize,
  normalise, pad), ``proposals`` (anchors, proposal decoding, top-k and NMS, the RPN's and cascade's
  glue), ``assign``, ``sample``, ``targets`` (mask targets and YOLACT's mask assembly), ``loss`` (the
  criterion: decoding, labels, weights, the classification, box and mask losses, balancing),
  ``loss/backward`` (the backward from the total loss down to the heads' outputs), ``glue`` (the
  rest of the forward: stacking stage outputs), ``optimizer`` (zero_grad, gradient clipping,
  step, lr), ``logging`` (NaN watch, history sums, progress bar).

The backward is split in two calls: ``torch.autograd.grad`` from the total loss to the heads' output
tensors (the loss side), then ``torch.autograd.backward`` from those tensors with those gradients
(the network side); the sum is the full backward (``--check-split`` verifies that the parameter
gradients match a single ``backward()``). Time spent in other threads of the process (rich's
progress-bar refresh, thread pools) is shown apart as ``other threads`` (process minus thread CPU time).

The table prints the median of each region over ``--iters`` iterations after ``--warmup``, its
share of the sum of medians (``ms/iter``, the training thread's CPU time per iteration) and the
network / non-network shares of that sum. ``other threads`` is shown in milliseconds beside it, not
in the shares: the progress bar redraws 10 times per wall-clock second, so its CPU time per
iteration grows with the wall time of an iteration, which a loaded machine stretches.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.utils._python_dispatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _machine import cpu_model  # noqa: E402

STANDARD = {"faster_rcnn": "ce", "cascade_rcnn": "ce", "mask_rcnn": "ce", "atss": "focal", "paa": "focal",
            "yolact": "ce"}
NETWORK = ("net/backbone", "net/fpn", "net/heads", "net/backward")
COLUMNS = ("data", "transform", "net/backbone", "net/fpn", "net/heads", "proposals", "assign", "sample", "targets",
           "loss", "glue", "net/backward", "loss/backward", "optimizer", "logging")


class Clock:
    """Exclusive thread CPU time per named region: entering a region pauses the one below it."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.last = time.thread_time()
        self.boundary: list[torch.Tensor] = []  # the heads' outputs of this iteration (the backward split)
        self.profiling = False
        self._ranges: list = []

    def enter(self, name: str) -> None:
        now = time.thread_time()
        if self.stack:
            self.totals[self.stack[-1]] += now - self.last
        self.stack.append(name)
        self.last = now
        if self.profiling:
            rf = torch.profiler.record_function(name)
            rf.__enter__()
            self._ranges.append(rf)

    def exit(self) -> None:
        if self.profiling and self._ranges:
            self._ranges.pop().__exit__(None, None, None)
        now = time.thread_time()
        self.totals[self.stack.pop()] += now - self.last
        self.last = now

    @contextlib.contextmanager
    def region(self, name: str):
        self.enter(name)
        try:
            yield
        finally:
            self.exit()

    def in_network(self) -> bool:
        return any(s.startswith("net/") for s in self.stack)

    def reset(self) -> dict[str, float]:
        totals = dict(self.totals)
        self.totals.clear()
        self.boundary.clear()
        return totals


CLOCK = Clock()


def _tensors(value):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _wrap(fn, name: str, boundary: bool = False):
    """``fn`` timed as region ``name``; ``boundary``: its outputs that need a gradient end the network."""

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        outer_network = CLOCK.in_network()
        with CLOCK.region(name):
            result = fn(*args, **kwargs)
        if boundary and not outer_network:
            CLOCK.boundary.extend(t for t in _tensors(result) if t.requires_grad)
        return result

    timed.__wrapped_region__ = name
    return timed


_PATCHED: list[tuple[object, str, object]] = []


def _patch_attr(owner, attr: str, name: str, boundary: bool = False) -> None:
    original = getattr(owner, attr, None)
    if original is None or getattr(original, "__wrapped_region__", None):  # absent in this version, or done
        return
    raw = vars(owner).get(attr) if isinstance(owner, type) else None
    _PATCHED.append((owner, attr, raw if isinstance(raw, staticmethod) else original))
    wrapped = _wrap(original, name, boundary)
    setattr(owner, attr, staticmethod(wrapped) if isinstance(raw, staticmethod) else wrapped)


def _patch_function_everywhere(fn, name: str) -> None:
    """Wrap ``fn`` in every loaded rsdet module that holds it (``from x import fn`` copies the name)."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("rsdet") and any(
                v is fn for v in vars(module).values()):
            for attr, v in list(vars(module).items()):
                if v is fn:
                    _patch_attr(module, attr, name)


def _module_region(module: torch.nn.Module, name: str, boundary: bool = False) -> None:
    def pre(mod, args):
        mod.__outer_network__ = CLOCK.in_network()
        CLOCK.enter(name)

    def post(mod, args, output):
        CLOCK.exit()
        if boundary and not mod.__outer_network__:
            CLOCK.boundary.extend(t for t in _tensors(output) if t.requires_grad)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def instrument_code() -> None:
    """Wrap the functions and methods of the training step in regions (once per process)."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.rpn import RegionProposalNetwork

    import rsdet.models.detectors  # noqa: F401  (loads every detector module)
    from rsdet.models import anchors, samplers
    from rsdet.models.assign import atss, max_iou, paa
    from rsdet.models.criterion import Criterion
    from rsdet.models import solo_assign
    from rsdet.models.detectors import cascade_rcnn, one_stage, solov2, yolact
    from rsdet.models.heads import protonet, roi_box, roi_mask, rpn

    for fn, name in ((max_iou.max_iou_assign, "assign"), (getattr(max_iou, "max_iou_match_images", None), "assign"),
                     (atss.atss_assign_boxes, "assign"), (getattr(atss, "atss_assign_boxes_images", None), "assign"),
                     (paa.paa_anchor_scores, "assign"), (paa.paa_reassign, "assign"),
                     (rpn.inside_anchors, "assign"),
                     (samplers.sample_instances, "sample"), (samplers.sample_stage, "sample"),
                     (samplers.ohem_row_losses, "sample"), (roi_mask.cap_positive_rows, "sample"),
                     (anchors.grid_anchors, "proposals"), (cascade_rcnn.refine_boxes, "proposals"),
                     (roi_mask.mask_targets, "targets"), (protonet.gt_masks_at, "targets"),
                     (protonet.prototype_mask_prediction, "targets"),
                     (solo_assign.solo_assign, "assign")):
        if fn is not None:
            _patch_function_everywhere(fn, name)
    for cls in (one_stage.ATSS, one_stage.PAA):
        _patch_attr(cls, "assign", "assign")
        _patch_attr(cls, "assign_images", "assign")
    _patch_attr(yolact.YOLACT, "_assign", "assign")
    _patch_attr(yolact.YOLACT, "_assign_images", "assign")
    _patch_attr(roi_box.RoIHead, "assign", "assign")
    _patch_attr(rpn.RPN, "forward", "proposals")
    _patch_attr(RegionProposalNetwork, "filter_proposals", "proposals")
    _patch_attr(det_utils.BoxCoder, "decode", "proposals")
    _patch_attr(roi_box.RoIHead, "_predict", "net/heads", boundary=True)
    _patch_attr(roi_mask.MaskBranch, "predict", "net/heads", boundary=True)
    _patch_attr(roi_mask.MaskBranch, "_label_masks", "targets")
    _patch_attr(Criterion, "forward", "loss")
    # SOLOv2's dynamic 1 x 1 convs (kernels x mask features) are network in the forward; their backward
    # falls in loss/backward (the heads' outputs, kernels and mask features, end the network).
    _patch_attr(solov2.SOLOv2, "_mask_prediction", "net/heads")
    _patch_attr(solov2.SOLOv2, "assign", "assign")


def instrument_model(model: torch.nn.Module) -> None:
    """Regions on the model's network modules (hooks) and its image transform."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.rpn import RPNHead

    from rsdet.models.heads.dense import DenseHead
    from rsdet.models.heads.protonet import ProtoNet, YolactHead
    from rsdet.models.heads.solo import MaskFeatureBranch, SoloKernelHead

    _module_region(model.transform, "transform")
    _module_region(model.backbone.body, "net/backbone")
    _module_region(model.backbone.fpn, "net/fpn")
    for module in model.modules():
        if isinstance(module, (RPNHead, DenseHead, YolactHead, ProtoNet, SoloKernelHead, MaskFeatureBranch)):
            _module_region(module, "net/heads", boundary=True)
        elif isinstance(module, AnchorGenerator):
            _module_region(module, "proposals")


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from rsdet.train_cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def _split_backward(total: torch.Tensor, boundary: list[torch.Tensor]) -> None:
    """The backward as loss side (total -> heads' outputs) then network side (heads' outputs -> parameters)."""
    with CLOCK.region("loss/backward"):
        grads = torch.autograd.grad(total, boundary, allow_unused=True)
    pairs = [(t, g) for t, g in zip(boundary, grads) if g is not None]
    with CLOCK.region("net/backward"):
        if pairs:
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])


def profile_case(detector: str, loss: str, overrides: list[str], iters: int, warmup: int,
                 check_split: bool = False, top: int = 0, count_ops: bool = False, foreach: bool = False,
                 refresh_per_second: float = 10.0) -> dict:
    """Median seconds per region of ``iters`` training iterations of one recipe."""
    from rich.console import Console
    from rich.progress import Progress

    from rsdet.data.build import build_dataset
    from rsdet.data.coco_dataset import collate_fn
    from rsdet.engine.loader import TrainLoader
    from rsdet.engine.schedule import build_optimizer, make_plan, set_lr
    from rsdet.engine.trainer import _FiniteWatch, _LogState, seed_everything
    from rsdet.models import build_detector

    cfg = _compose([f"detector={detector}", f"loss={loss}", "device=cpu", *overrides])
    seed_everything(int(cfg.seed))
    train_ds = build_dataset(cfg.dataset, "train", train=True)
    model = build_detector(cfg, train_ds.num_classes)
    instrument_model(model)
    plan = make_plan(cfg.schedule, cfg.loss, len(train_ds))
    optimizer = build_optimizer(model, cfg.schedule, plan)
    if foreach:  # the multi-tensor implementation of the same update (docs/performance.md)
        for group in optimizer.param_groups:
            group["foreach"] = True
    loader = TrainLoader(train_ds, batch_size=int(cfg.schedule.batch_size), seed=int(cfg.seed), collate_fn=collate_fn,
                         drop_last=True, epoch_len=len(train_ds))
    batches = iter(loader)
    finite, logged = _FiniteWatch(), _LogState()
    log_every = int(cfg.logger.get("log_every", 10))
    grad_clip = cfg.schedule.get("grad_clip")
    last_stage_pos = f"{model.stages[-1].name}/num_pos"
    history = tempfile.TemporaryFile("w+")
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    model.train()
    rows, checked = [], False
    profiler = ops = None
    measured = warmup + iters
    with Progress(console=console, redirect_stdout=False, redirect_stderr=False,
                  refresh_per_second=refresh_per_second) as progress:
        task = progress.add_task("training", total=measured + (1 if top else 0) + (1 if count_ops else 0))
        for it in range(measured + (1 if top else 0) + (1 if count_ops else 0)):
            if top and it == measured:  # after the timed iterations: the profiler slows every op down
                profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                profiler.__enter__()
                CLOCK.profiling = True
            elif count_ops and it == measured + (1 if top else 0):
                if profiler is not None:
                    CLOCK.profiling = False
                    profiler.__exit__(None, None, None)
                ops = _OpCounter()
                ops.__enter__()
            CLOCK.reset()
            process_start, thread_start = time.process_time(), time.thread_time()
            CLOCK.last = thread_start
            CLOCK.enter("glue")
            with CLOCK.region("data"):
                epoch, (images, targets) = next(batches)
                images = [im.to("cpu") for im in images]
                targets = [{k: (v.to("cpu") if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            with CLOCK.region("optimizer"):
                lr = set_lr(optimizer, plan, it)
            terms, stats = model(images, targets)
            with CLOCK.region("logging"):
                finite.observe(terms, it + 1)
                message = finite.error()
                if message:
                    raise SystemExit(f"{detector} loss={loss}: {message}")
            with CLOCK.region("loss"):
                total = sum(terms.values())
            with CLOCK.region("optimizer"):
                optimizer.zero_grad(set_to_none=True)
            boundary = list(CLOCK.boundary)
            if check_split and not checked:
                _check_split(model, total, boundary)
                checked = True
                optimizer.zero_grad(set_to_none=True)
            _split_backward(total, boundary)
            with CLOCK.region("optimizer"):
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
                optimizer.step()
            with CLOCK.region("logging"):
                logged.zero_pos += int(stats.get(last_stage_pos, 1) == 0)
                for k, v in terms.items():
                    logged.add(f"loss/{k}", v)
                logged.add("loss/total", total)
                for k, v in stats.items():
                    logged.add(f"ratio/{k}", float(v))
                logged.count += 1
                progress.update(task, advance=1)
                if (it + 1) % log_every == 0:
                    logged.sync(None)
                    row = logged.row(it + 1, epoch, lr)
                    progress.update(task, info=f"loss {row['loss/total']:.3f}")
                    history.write(json.dumps(row) + "\n")
            CLOCK.exit()
            totals = CLOCK.reset()
            totals["other threads"] = max(0.0, (time.process_time() - process_start)
                                          - (time.thread_time() - thread_start))
            if warmup <= it < measured:
                rows.append(totals)
    if ops is not None:
        ops.__exit__(None, None, None)
    elif profiler is not None:
        CLOCK.profiling = False
        profiler.__exit__(None, None, None)
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=top), flush=True)
    keys = sorted(set().union(*rows))
    medians = {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys}
    per_iter = statistics.median(sum(r.values()) for r in rows)
    result = {"detector": detector, "loss": loss, "medians": medians, "iteration": per_iter}
    if ops is not None:
        result["ops"] = dict(ops.counts)
    return result


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ATen operators each region dispatches (one iteration, forward and backward): at a
    few microseconds of framework overhead each, the count is what a region costs beyond its arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[CLOCK.stack[-1] if CLOCK.stack else "glue"] += 1
        return func(*args, **(kwargs or {}))


def _check_split(model, total: torch.Tensor, boundary: list[torch.Tensor]) -> None:
    """The split backward gives the parameter gradients of one ``backward()`` (up to summation order)."""
    params = [p for p in model.parameters() if p.requires_grad]
    full = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
    grads = torch.autograd.grad(total, boundary, retain_graph=True, allow_unused=True)
    pairs = [(t, g) for t, g in zip(boundary, grads) if g is not None]
    split = torch.autograd.grad([t for t, _ in pairs], params, [g for _, g in pairs], retain_graph=True,
                                allow_unused=True)
    worst = 0.0
    for p, a, b in zip(params, full, split):
        if (a is None) != (b is None):
            raise SystemExit(f"--check-split: a parameter of shape {tuple(p.shape)} gets a gradient from only one "
                             "of the two backwards: a loss path bypasses the heads' outputs")
        if a is not None:
            worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp(min=1e-30)))
    print(f"--check-split: {len(params)} parameters, worst relative gradient difference {worst:.2e}", flush=True)
    if worst > 1e-4:
        raise SystemExit("--check-split: the split backward differs from backward()")


def _fmt_ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def table(results: list[dict], markdown: bool) -> str:
    present = [c for c in COLUMNS if any(r["medians"].get(c, 0.0) > 0 for r in results)]
    lines = []
    header = ["detector", "loss", "ms/iter", *present, "network", "non-network", "other threads"]
    if markdown:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    else:
        lines.append("  ".join(f"{h:>10s}" if i > 1 else f"{h:12s}" for i, h in enumerate(header)))
    for r in results:
        m = r["medians"]
        total = sum(m.get(c, 0.0) for c in present)
        network = sum(m.get(c, 0.0) for c in NETWORK)
        cells = [r["detector"], r["loss"], _fmt_ms(total),
                 *(f"{_fmt_ms(m.get(c, 0.0))} ({100 * m.get(c, 0.0) / total:.0f}%)" for c in present),
                 f"{100 * network / total:.0f}%", f"{100 * (1 - network / total):.0f}%",
                 _fmt_ms(m.get("other threads", 0.0))]
        if markdown:
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append("  ".join(f"{c:>10s}" if i > 1 else f"{c:12s}" for i, c in enumerate(cells)))
    return "\n".join(lines)


def ops_table(results: list[dict], markdown: bool) -> str:
    """ATen operators per region in one iteration (``--ops``)."""
    present = [c for c in COLUMNS if any(r.get("ops", {}).get(c, 0) for r in results)]
    header = ["detector", "loss", "total", *present]
    lines = (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] if markdown
             else ["  ".join(f"{h:>9s}" if i > 1 else f"{h:12s}" for i, h in enumerate(header))])
    for r in results:
        ops = r.get("ops", {})
        cells = [r["detector"], r["loss"], str(sum(ops.values())), *(str(ops.get(c, 0)) for c in present)]
        lines.append("| " + " | ".join(cells) + " |" if markdown
                     else "  ".join(f"{c:>9s}" if i > 1 else f"{c:12s}" for i, c in enumerate(cells)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default="faster_rcnn,cascade_rcnn,mask_rcnn,atss,paa,yolact")
    parser.add_argument("--losses", default="rs,standard", help="comma-separated; 'standard' = the detector's own")
    parser.add_argument("--iters", type=int, default=20, help="measured iterations per recipe")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--check-split", action="store_true", help="verify the split backward once per recipe")
    parser.add_argument("--top", type=int, default=0, help="also print torch.profiler's N hottest ops")
    parser.add_argument("--foreach", action="store_true",
                        help="the optimiser's multi-tensor (foreach) implementation instead of rsdet's default")
    parser.add_argument("--refresh-per-second", type=float, default=10.0,
                        help="progress-bar refreshes per second (rsdet train: rich's default, 10)")
    parser.add_argument("--ops", action="store_true", help="also count the ATen operators of each region")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--json", type=Path, help="write the medians to this file")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (every recipe)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    instrument_code()
    results = []
    for det in args.detectors.split(","):
        for loss in args.losses.split(","):
            loss = STANDARD[det] if loss == "standard" else loss
            r = profile_case(det, loss, args.overrides, args.iters, args.warmup, args.check_split, args.top,
                             args.ops, args.foreach, args.refresh_per_second)
            results.append(r)
            print(f"{det:12s} loss={loss:6s} {1000 * r['iteration']:.1f} ms/iter (thread CPU time)", flush=True)
    print()
    shown = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    print(f"`python scripts/profile_iteration.py{' ' + shown if shown else ''}` on "
          f"{time.strftime('%Y-%m-%d')}, {platform.machine()} CPU ({cpu_model()}), 1 thread, load average "
          f"{os.getloadavg()[0]:.1f}; median thread CPU ms per region of {args.iters} iterations after "
          f"{args.warmup} warm-up (share of the training thread's sum; other threads apart):")
    print()
    print(table(results, args.markdown))
    if args.ops:
        print()
        print(ops_table(results, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
