"""Matrix NMS (SOLOv2, Wang et al., NeurIPS 2020, §4.2): every candidate mask's score decays by its
overlap with the higher-scoring masks of its class, in one parallel step instead of a greedy loop
(docs/detectors.md, "SOLOv2").

With the candidates sorted by score (s_1 >= s_2 >= ...), IoU_ij the mask IoU of i and j, and only
pairs of the same class counted (class-aware):

    comp_i  = max_{k < i} IoU_ki                       (how much i is itself suppressed)
    decay_j = min(1, min_{i < j} f(IoU_ij) / f(comp_i))
    s_j    <- s_j · decay_j

with the Gaussian f(x) = exp(-σ x²) (σ = 2 in SOLOv2's test setting) or the linear f(x) = 1 - x.
A mask that overlaps a strong mask that is itself heavily overlapped is suppressed less (the division
by f(comp_i)). Scores never increase, and the best mask of each class keeps its score.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rsdet.errors import ConfigError

__all__ = ["MATRIX_NMS_KERNELS", "mask_iou_matrix", "matrix_nms"]

MATRIX_NMS_KERNELS = ("gaussian", "linear")


def mask_iou_matrix(masks: Tensor, areas: Tensor | None = None) -> Tensor:
    """(n, n) IoU of every pair of binary masks (n, h, w); ``areas`` (n,) their pixel counts when known."""
    flat = masks.reshape(masks.shape[0], -1).float()
    inter = flat @ flat.T
    area = flat.sum(1) if areas is None else areas.float()
    union = area[:, None] + area[None, :] - inter
    return inter / union.clamp(min=1e-6)


def matrix_nms(masks: Tensor, labels: Tensor, scores: Tensor, sigma: float = 2.0, kernel: str = "gaussian",
               areas: Tensor | None = None) -> Tensor:
    """Decayed scores (n,) of the candidates ``masks`` (n, h, w; binary), ``labels`` (n,), ``scores`` (n,)
    sorted in descending order (module docstring). ``areas`` (n,): the masks' pixel counts, if at hand."""
    if kernel not in MATRIX_NMS_KERNELS:
        raise ConfigError(f"detector.test.kernel={kernel!r} is not one of {', '.join(MATRIX_NMS_KERNELS)}")
    n = scores.shape[0]
    if n == 0:
        return scores.clone()
    if bool((scores[1:] > scores[:-1]).any()):
        raise ConfigError("matrix_nms: scores must be sorted in descending order")
    same_class = labels[:, None] == labels[None, :]
    earlier = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(diagonal=1)  # [i, j]: i ranks above j
    iou = mask_iou_matrix(masks, areas) * (same_class & earlier)
    comp = iou.max(dim=0).values  # comp_i over the column (its own predecessors)
    if kernel == "gaussian":
        ratio = torch.exp(-sigma * (iou ** 2 - comp[:, None] ** 2))
    else:
        ratio = (1.0 - iou) / (1.0 - comp[:, None]).clamp(min=1e-6)
    ratio = torch.where(same_class & earlier, ratio, torch.ones_like(ratio))
    decay = ratio.min(dim=0).values.clamp(max=1.0)
    return scores * decay
