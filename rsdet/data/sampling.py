"""Repeat-factor sampling for long-tailed training sets (introduced with LVIS, Gupta et al., CVPR 2019).

Each category ``c`` gets ``r(c) = max(1, sqrt(t / f(c)))``, where ``f(c)`` is the fraction of training
images that contain ``c`` and ``t`` the threshold (LVIS' official recipe: ``t = 1e-3``); an image is
repeated ``r(I) = max over the categories in I of r(c)`` times per epoch (1 for an image without
objects). Repeat factors are not integers, so every epoch rounds them stochastically: image ``I``
appears ``floor(r(I)) + 1`` times with probability ``r(I) - floor(r(I))``, else ``floor(r(I))`` times.
The realised index list is shuffled; both draws depend only on ``(seed, epoch)``.

Use from a training loop::

    sampler = build_train_sampler(train_ds, cfg.dataset, seed=cfg.seed)   # None: off
    loader = DataLoader(train_ds, batch_size=..., sampler=sampler, shuffle=sampler is None, ...)
    for epoch in ...:
        sampler.set_epoch(epoch)   # before iterating; len(sampler) is this epoch's length
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from rsdet.errors import ConfigError

__all__ = ["RepeatFactorSampler", "build_train_sampler", "category_repeat_factors", "repeat_factors"]

log = logging.getLogger(__name__)


def category_repeat_factors(image_labels: Sequence[Iterable[int]], threshold: float) -> dict[int, float]:
    """``{category: r(c)}`` for the categories present in ``image_labels`` (one label set per image;
    a category counts once per image however many of its objects the image has)."""
    n = len(image_labels)
    counts = Counter(c for labels in image_labels for c in set(labels))
    return {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in counts.items()}


def repeat_factors(image_labels: Sequence[Iterable[int]], threshold: float) -> np.ndarray:
    """Per-image repeat factors ``r(I)`` (float64, >= 1), in the order of ``image_labels``."""
    per_category = category_repeat_factors(image_labels, threshold)
    return np.asarray([max((per_category[c] for c in set(labels)), default=1.0) for labels in image_labels],
                      dtype=np.float64)


class RepeatFactorSampler(Sampler[int]):
    """Dataset indices, image ``i`` repeated ``factors[i]`` times on average per epoch, shuffled.

    ``set_epoch(e)`` selects the epoch; the indices of an epoch depend only on ``(seed, e)``, so a
    resumed run replays the same epochs. ``len(self)`` is the current epoch's length (it varies a
    little between epochs); ``expected_length`` is its mean, ``sum(factors)``.
    """

    def __init__(self, factors: Sequence[float] | np.ndarray, *, seed: int = 0, shuffle: bool = True) -> None:
        factors = np.asarray(factors, dtype=np.float64)
        if factors.ndim != 1 or not np.all(np.isfinite(factors)) or np.any(factors < 1.0):
            raise ValueError("repeat factors must be a 1-d array of finite numbers >= 1")
        self.factors = factors
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self._cached: tuple[int, np.ndarray] | None = None

    @property
    def expected_length(self) -> float:
        return float(self.factors.sum())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self, epoch: int | None = None) -> np.ndarray:
        """The dataset indices of ``epoch`` (default: the current one), in sampling order."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.seed, epoch])
        whole = np.floor(self.factors)
        repeats = whole.astype(np.int64) + (rng.random(len(self.factors)) < self.factors - whole)
        out = np.repeat(np.arange(len(self.factors)), repeats)
        if self.shuffle:
            out = out[rng.permutation(len(out))]
        self._cached = (epoch, out)
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return len(self.indices())


def _threshold(dataset_cfg: Mapping | Any) -> float | None:
    getter = getattr(dataset_cfg, "get", None)
    value = getter("repeat_factor_threshold", None) if getter else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 1:
        raise ConfigError(f"dataset.repeat_factor_threshold={value!r} must be a fraction in (0, 1] (LVIS: 0.001) "
                          "or null to sample every image once per epoch")
    return float(value)


def build_train_sampler(dataset: Any, dataset_cfg: Mapping | Any, seed: int) -> RepeatFactorSampler | None:
    """The training sampler ``dataset.repeat_factor_threshold`` asks for, or None (plain shuffling).

    ``dataset`` must offer ``image_labels()`` (one label list per index, as
    :class:`rsdet.data.coco_dataset.CocoDetectionDataset` does); ``dataset_cfg`` is the ``dataset``
    config node (a mapping); ``seed`` the run's seed.
    """
    threshold = _threshold(dataset_cfg)
    if threshold is None:
        return None
    if not hasattr(dataset, "image_labels"):
        raise ConfigError(f"dataset.repeat_factor_threshold is set but {type(dataset).__name__} cannot list the "
                          "labels of its images (no image_labels()); set dataset.repeat_factor_threshold=null")
    factors = repeat_factors(dataset.image_labels(), threshold)
    sampler = RepeatFactorSampler(factors, seed=seed)
    log.info("repeat-factor sampling (threshold %g): %d of %d images repeated, up to %.2fx; an epoch is ~%.0f "
             "images instead of %d", threshold, int((factors > 1).sum()), len(factors),
             float(factors.max(initial=1.0)), sampler.expected_length, len(factors))  # fmt: skip
    return sampler
