"""What the training loop keeps between history rows: the partial sums of the next row and the
first non-finite loss term, both on the training device so the step never waits for the GPU.

Both are part of exact resume (docs/resume.md): ``LogState`` is checkpointed under ``log``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import torch


#: what the messages about non-finite values suggest
FIX = ("Try a lower learning rate (schedule.lr=...), gradient clipping (schedule.grad_clip=10) or check the "
       "annotations for degenerate boxes.")


class FiniteWatch:
    """Notices a NaN/inf loss term, or NaN/inf gradients under finite loss terms, without reading
    them back every iteration: the first iteration at which each term (and the gradients) became
    non-finite, and the term's value, are kept on the device; ``error()`` reads them (one
    synchronisation) and returns the message, or None while everything stayed finite."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.first: torch.Tensor | None = None
        self.value: torch.Tensor | None = None
        self.grad_first: torch.Tensor | None = None
        self._pending: tuple | None = None

    def observe(self, terms: dict[str, torch.Tensor], iteration: int) -> None:
        names = tuple(terms)
        if names != self.names:
            self._pending = self._pending or self._first_bad()  # the set of terms changed (rare): settle the old one
            self.names, self.first, self.value = names, None, None
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        bad = ~torch.isfinite(values)
        if self.first is None:
            self.first = torch.full(values.shape, -1, dtype=torch.int64, device=values.device)
            self.value = torch.zeros_like(values)
        new = bad & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, iteration), self.first)
        self.value = torch.where(new, values, self.value)

    def observe_gradients(self, finite: torch.Tensor | None, iteration: int) -> None:
        """``finite``: a device bool, whether every gradient of this iteration is finite (None: no gradients)."""
        if finite is None:
            return
        if self.grad_first is None:
            self.grad_first = torch.full((), -1, dtype=torch.int64, device=finite.device)
        self.grad_first = torch.where(~finite & (self.grad_first < 0), torch.full_like(self.grad_first, iteration),
                                      self.grad_first)

    def _first_bad(self) -> tuple | None:
        if self.first is None:
            return None
        bad = [(it, name, v) for it, name, v in zip(self.first.tolist(), self.names, self.value.tolist()) if it >= 0]
        return min(bad) if bad else None

    def error(self, kept: str = "") -> str | None:
        """The message about the first non-finite value (``kept``: what it says about the checkpoint on
        disk), or None."""
        loss = self._pending or self._first_bad()
        grad = int(self.grad_first.item()) if self.grad_first is not None else -1
        if grad >= 0 and (loss is None or grad < loss[0]):
            return (f"the gradients became NaN/inf at iteration {grad} while every loss term was finite. "
                    f"{kept + ' ' if kept else ''}{FIX}")
        if loss is None:
            return None
        it, name, v = loss
        return f"loss term '{name}' became {v} at iteration {it}. {kept + ' ' if kept else ''}{FIX}"


class LogState:
    """What the next history row needs: per-key sums and the iteration count since the last row, the
    running count of batches without R-CNN positives, and the clocks (sec_per_iter, train_seconds).
    Checkpointed, so a resumed run writes the rows the uninterrupted run would have written.

    The sums of loss terms are float64 tensors on the training device (no read-back per iteration);
    ``sync`` reads them back and, in a data-parallel run, averages them over the ranks (counts of
    positives and negatives are then per global batch, ``batches_without_positives`` counts the
    per-rank batches). ``row`` and ``state_dict`` expect a ``sync`` just before."""

    _SUMMED = ("/num_pos", "/num_neg")  # per-rank means of these become global-batch totals in a row

    def __init__(self) -> None:
        self.sums: dict[str, Any] = defaultdict(float)
        self.count = 0
        self.zero_pos = 0
        self.world_size = 1
        self._window_before = 0.0  # seconds of the current row's window spent before this process
        self._train_before = 0.0  # training seconds spent before this process
        self.restart_clock()

    def restart_clock(self) -> None:
        now = time.perf_counter()
        self._window_start = now - self._window_before
        self._train_start = now - self._train_before

    def train_seconds(self) -> float:
        return time.perf_counter() - self._train_start

    def add(self, key: str, value) -> None:
        """Add a device tensor (kept on the device, in float64) or a Python number."""
        if torch.is_tensor(value):
            value = value.detach().to(torch.float64)
        self.sums[key] = self.sums[key] + value

    def sync(self, dist=None) -> None:
        """Read the sums back (one synchronisation) and, with several ranks, average them over the ranks."""
        tensors = [k for k, v in self.sums.items() if torch.is_tensor(v)]
        read = dict(zip(tensors, torch.stack([self.sums[k].reshape(()) for k in tensors]).tolist())) if tensors else {}
        host = {k: read[k] if k in read else float(v) for k, v in self.sums.items()}
        if dist is not None and dist.enabled:
            gathered = dist.all_gather_object((host, self.zero_pos))
            keys = sorted(set().union(*(h for h, _ in gathered)))
            host = {k: sum(h.get(k, 0.0) for h, _ in gathered) / dist.world_size for k in keys}
            total_zero = sum(z for _, z in gathered)
            self.zero_pos = total_zero if dist.is_main else 0  # rank 0 carries the run's count from here
            self.world_size = dist.world_size
        self.sums.clear()
        self.sums.update(host)

    def row(self, iteration: int, epoch: int, lr: float, zero_pos: int | None = None) -> dict:
        if zero_pos is not None:
            self.zero_pos = zero_pos
        now = time.perf_counter()
        n, w = max(self.count, 1), self.world_size
        row = {"iteration": iteration, "epoch": epoch, "lr": lr,
               "sec_per_iter": (now - self._window_start) / n,
               **{k: (v * w if w > 1 and k.endswith(self._SUMMED) else v) / n for k, v in self.sums.items()},
               "batches_without_positives": self.zero_pos}
        self.sums.clear()
        self.count = 0
        self._window_start = now
        return row

    def state_dict(self, zero_pos: int | None = None) -> dict:
        if zero_pos is not None:
            self.zero_pos = zero_pos
        now = time.perf_counter()
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count,
                "batches_without_positives": self.zero_pos,
                "window_seconds": now - self._window_start, "train_seconds": now - self._train_start}

    def load_state_dict(self, state: dict | None, keep_count: bool = True) -> None:
        if not state:  # a checkpoint without logging state: the next row averages from here
            return
        self.sums.clear()
        self.sums.update(state["sums"])
        self.count = int(state["count"])
        self.zero_pos = int(state["batches_without_positives"]) if keep_count else 0
        self._window_before = float(state["window_seconds"])
        self._train_before = float(state["train_seconds"])
        self.restart_clock()
