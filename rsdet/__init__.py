"""rsdet — experiment runner for ranking-based object-detection losses.

Reimplements Rank & Sort Loss (Oksuz et al., ICCV 2021), AP Loss and aLRP Loss with
exact, vectorised numerics on CPU and GPU, plus the detectors, evaluators (COCO/LVIS AP and
optimal LRP) and reporting needed to rerun the paper's ablations.
"""

__version__ = "0.1.0"
