"""Test-time candidate selection of the dense detectors: per pyramid level, the rows with the best
class score (ATSS, PAA and YOLACT keep the top 1000 of each level before NMS; docs/detectors.md)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["top_k_per_level"]


def top_k_per_level(scores: Tensor, per_level: list[int], k: int) -> Tensor:
    """Row indices into ``scores`` (N, C), rows level by level with ``per_level`` rows each: the
    ``min(k, rows)`` rows of each level with the highest best-class score, best first within a level,
    levels in order."""
    keep = []
    for rows in torch.arange(scores.shape[0], device=scores.device).split(per_level):
        best = scores[rows].max(dim=1).values
        keep.append(rows[best.topk(min(int(k), len(rows))).indices])
    return torch.cat(keep)
