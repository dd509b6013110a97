"""Detection evaluation: COCO/LVIS AP through the official evaluators, optimal LRP, sweeps.

- :func:`evaluate` — AP as pycocotools' COCOeval / the ``lvis`` package's LVISEval compute it
  (``backend="official"``: those evaluators, numpy 2 safe; ``"fast"``/``"auto"``:
  :mod:`rsdet.evaluation.fast`, the same numbers from one vectorised matching) and oLRP with its
  components (Oksuz et al., TPAMI 2021) under the same matching; ``per_class=True`` adds
  per-class AP/oLRP and PR curves (:mod:`rsdet.evaluation.per_class` renders them).
- :func:`threshold_sweep`, :func:`write_table`, :func:`render_table` — AP (and fps) against the
  test score threshold, laid out like Table S11 of the Rank & Sort Loss supplementary.
- :mod:`rsdet.evaluation.cli` — ``rsdet evaluate``.
"""

from rsdet.evaluation.evaluator import BACKENDS, evaluate, metric_keys
from rsdet.evaluation.lrp import ClassLRP, optimal_lrp
from rsdet.evaluation.sweep import default_columns, render_table, threshold_sweep, write_table

__all__ = [
    "BACKENDS",
    "ClassLRP",
    "default_columns",
    "evaluate",
    "metric_keys",
    "optimal_lrp",
    "render_table",
    "threshold_sweep",
    "write_table",
]
