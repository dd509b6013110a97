"""paper-mini's per-table settings and measured costs: the one place to retune it.

Every training of paper-mini belongs to a :class:`Setup` — a detector on a dataset with a CPU-sized
number of iterations — and differs from the setup's other trainings only in the keys the setup varies
(``keys``, with their defaults). Cells of different tables whose settings are equal on those keys are
the same trainings (Table S4's δ_RS 0.5 is Table S1's score-based/value cell). To retune a table,
change its setup here: ``max_iters``, ``extra`` overrides (e.g. a stronger preset), or the seeds; the
plan's estimate follows from ``SEC_PER_ITER`` and ``EVAL_SECONDS`` (measured; keep them in step when a
preset changes its cost, docs/paper-mini.md, "Budget").

S1, S3 and S4 run on the shipped ``detector=atss`` CPU preset (conf/preset/cpu_demo_atss.yaml) with
fewer iterations than its 1300: 105 trainings must fit the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Seeds of every cell in the full paper-mini (the same seeds in every arm of a comparison)
SEEDS = (0, 1, 2)
#: Default budget of the full run: 5 hours of wall time on 2 free cores
DEFAULT_BUDGET_MIN = 300.0
#: Trainings at a time (each with cores/jobs threads); sweeps and benchmarks always run alone
DEFAULT_JOBS = 2


@dataclass(frozen=True)
class Setup:
    """A detector, a dataset and a schedule shared by the trainings of one or more tables."""

    name: str                         # run folders: <root>/<name>/<setting>/seed<k>
    tables: tuple[str, ...]           # tables whose cells train with it (first: the one it is billed to)
    detector: str
    dataset: str
    max_iters: int
    keys: dict = field(default_factory=dict)   # the keys cells may vary, with their defaults
    extra: tuple[str, ...] = ()       # overrides of every training of the setup
    per_loss: dict = field(default_factory=dict)   # loss -> overrides added for that loss only
    epoch_evals: bool = False         # eval.every_epochs=1: an evaluation after every epoch (Table S2)


#: Keys whose default is the loss recipe's own sampler (conf/loss/<loss>.yaml, default_sampler)
RECIPE_DEFAULT = "recipe"

SETUPS: dict[str, Setup] = {s.name: s for s in (
    Setup("atss", ("S1", "S3", "S4"), "atss", "shapes", 600,
          keys={"loss": "rs", "loss.weighting": "score", "loss.balance": "value", "loss.box_weight": 1.0,
                "loss.delta": 0.5, "loss.delta_loc": None}),
    Setup("frcnn", ("S8", "S7", "S10"), "faster_rcnn", "shapes", 900,
          keys={"loss": "rs", "sampler.rpn": RECIPE_DEFAULT, "sampler.rcnn": RECIPE_DEFAULT}),
    Setup("alrp_vs_rs", ("S2",), "faster_rcnn", "shapes", 900, keys={"loss": "rs"},
          extra=("eval.every_epochs=1",),
          # the paper's aLRP updates its self-balance weight once per epoch (S2.2): 200 iterations here
          per_loss={"alrp": ("loss.alrp_period=200",)}, epoch_evals=True),
    Setup("cascade", ("S5",), "cascade_rcnn", "shapes", 600, keys={"loss": "rs"}),
    Setup("yolact", ("S6",), "yolact", "shapes", 1200, keys={"loss": "rs", "loss.label": "iou"}),
    Setup("mask_lvis", ("S11", "S7"), "mask_rcnn", "shapes_lvis", 900,
          keys={"loss": "rs", "sampler.rpn": RECIPE_DEFAULT, "sampler.rcnn": RECIPE_DEFAULT}),
)}

#: Iterations per epoch of each dataset at batch 4 (shapes: 800 training images; shapes_lvis: its
#: repeat-factor sampling makes an epoch ~1540 images, 1728 iterations for the preset's 4.5 epochs)
ITERS_PER_EPOCH = {"shapes": 200, "shapes_lvis": 384}

#: Seconds per training iteration, one training alone with 2 threads on the 2-core CPU: the demo figures
#: of the README (scripts/demo_figures.py --detectors, 2026-11-28, quiet machine: train seconds /
#: iterations). mask_rcnn on shapes_lvis is estimated from the shapes figure (+15% for the 72-class
#: heads), not measured on a quiet machine.
SEC_PER_ITER = {("faster_rcnn", "shapes"): 0.159, ("atss", "shapes"): 0.123, ("paa", "shapes"): 0.184,
                ("cascade_rcnn", "shapes"): 0.243, ("mask_rcnn", "shapes"): 0.266,
                ("mask_rcnn", "shapes_lvis"): 0.306, ("yolact", "shapes"): 0.158}
#: Seconds of one evaluation on the 200 validation images (same source; LVIS-style data estimated)
EVAL_SECONDS = {"faster_rcnn": 4.0, "atss": 4.0, "paa": 5.0, "cascade_rcnn": 5.0, "mask_rcnn": 8.0,
                "yolact": 8.0}
EVAL_SECONDS_LVIS = 15.0
#: Process start, config composition and data loading per `rsdet train` / `rsdet evaluate` call
OVERHEAD_SECONDS = 9.0
#: One training with one thread beside another, against alone with two threads (measured on the 2-core
#: CPU: Faster R-CNN 0.25 s per iteration against 0.16 s): two parallel trainings finish 2 / 1.5 = 1.33x
#: sooner than the same trainings one after the other
PARALLEL_SLOWDOWN = 1.5

#: Score thresholds of Table S11's sweep, and Table S10's (fps at the RS test threshold)
S11_THRESHOLDS = (1e-4, 1e-3, 1e-2, 0.1, 0.4, 0.6, 0.8)
S10_THRESHOLDS = (0.4,)
#: Minutes of one sweep: inference at the lowest threshold, then evaluation and fps (50 images) at each.
#: Estimated, not measured on a quiet machine: at 10^-4 a detector keeps up to 300 detections per image,
#: and Mask R-CNN predicts, pastes and encodes a mask for each (~2 s per image in the smoke run on a
#: loaded CPU), so its sweep is costed conservatively
SWEEP_MINUTES = {"faster_rcnn": 0.5, "mask_rcnn": 3.5}
SWEEP_MINUTES_PER_THRESHOLD = {"faster_rcnn": 0.1, "mask_rcnn": 0.4}

#: Table S9's benchmark (scripts/bench_table_s9.py): every detector's iteration, standard loss vs RS,
#: and the per-positive loop against rsdet's algorithm at the same N, P (sizes: a shapes-size head and
#: a COCO-size RPN)
BENCH = {"rounds": 5, "iters": 4, "warmup": 3, "loss_sizes": ((40_000, 150), (1_000_000, 500)),
         "loop_budget_s": 2.0, "iterations": True}
BENCH_MINUTES = 5.0

# ------------------------------------------------------------------------------------------ quick
#: `make paper-mini-quick`: two seeds, one finding per table, every schedule at half its iterations,
#: runs in their own folder (outputs/paper-mini-quick) so they never mix with the full run's
QUICK_SEEDS = (0, 1)
QUICK_ITER_SCALE = 0.5
#: The cells behind each table's quick finding (the first finding listed in rsdet/report/findings.py)
QUICK_CELLS = {
    "S1": [("Score-based [7]", "Self-balance (SB) / value"), ("Ranking-based [13]", "Self-balance (SB) / value")],
    "S2": [("aLRP Loss [13]", "Standard Training / Epoch 1"), ("RS Loss", "Standard Training / Epoch 1")],
    "S3": [("AP", "1.50"), ("AP", "Default")],
    "S4": [("AP", "0.40"), ("AP", "0.50")],
    "S5": [("Cascade R-CNN", "AP ↑"), ("RS Cascade R-CNN", "AP ↑")],
    "S6": [("Binary", "Segmentation / AP"), ("IoU", "Segmentation / AP")],
    "S7": [("COCO | Random | Random", "actual pos:neg task ratio / RPN"),
           ("COCO | None | None", "actual pos:neg task ratio / RPN")],
    "S8": [("RS Loss (Ours) | Random | Random", "AP"), ("RS Loss (Ours) | None | None", "AP")],
    "S11": [("10^-4", "RS-Mask R-CNN / AP_mask"), ("0.60", "RS-Mask R-CNN / AP_mask")],
}
QUICK_BENCH = {"rounds": 3, "iters": 2, "warmup": 1, "loss_sizes": ((40_000, 150),), "loop_budget_s": 1.0,
               "iterations": False}
QUICK_BENCH_MINUTES = 1.0

# ------------------------------------------------------------------------------------------ smoke
#: `--smoke`: the whole pipeline at a tiny size to check that every path from the runs to the document
#: works (one seed, 5 iterations, a 16-image training split so that an epoch — Table S2's evaluation
#: after epoch 1, Table S7's first-epoch ratios — ends within them, 8 validation images for every
#: evaluation and sweep); its numbers mean nothing
SMOKE_SEEDS = (0,)
SMOKE_ITERS = 5
SMOKE_OVERRIDES = ("dataset.generate.num_train=16", "dataset.generate.num_val=8", "logger.log_every=1",
                   "eval.max_images=4")
SMOKE_BENCH = {"rounds": 2, "iters": 1, "warmup": 1, "loss_sizes": ((2_000, 20),), "loop_budget_s": 0.5,
               "iterations": True, "detectors": ("faster_rcnn",)}
