"""Pictures drawn and written beside the work: composing a picture and encoding it as PNG (zlib, which
releases the GIL, as PIL's drawing mostly does) run in background threads while the caller goes on with
the next image's inference, so drawing adds little to the wall time of ``rsdet predict`` on a machine
with spare cores (scripts/bench_predict.py measures both the work and the wall time it adds)."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from torch import Tensor

from rsdet.errors import RsdetError
from rsdet.vis.draw import save_png


def default_threads() -> int:
    """Background threads: up to 2, leaving a core to the caller."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores - 1))


def _draw_and_save(draw: Callable[[], Tensor], path: Path) -> Path:
    return save_png(draw(), path)


class PngWriter:
    """``submit(image, path)`` queues a uint8 (3, H, W) image, ``submit_drawing(draw, path)`` a function
    returning one (drawn in the background too); at most ``pending`` pictures wait (the caller blocks
    beyond that, bounding memory); leaving the ``with`` block waits for every write and raises the
    first error (an unwritable folder, a full disk) naming the file."""

    def __init__(self, pending: int = 8, threads: int | None = None):
        threads = default_threads() if threads is None else int(threads)
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="rsdet-png")
        self._queue: deque[tuple[Path, Future]] = deque()
        self._pending = max(1, int(pending))
        self.written: list[Path] = []

    def submit(self, image: Tensor, path: str | Path) -> None:
        while len(self._queue) >= self._pending:
            self._collect_one()
        self._queue.append((Path(path), self._pool.submit(save_png, image.contiguous(), path)))

    def submit_drawing(self, draw: Callable[[], Tensor], path: str | Path) -> None:
        while len(self._queue) >= self._pending:
            self._collect_one()
        self._queue.append((Path(path), self._pool.submit(_draw_and_save, draw, Path(path))))

    def _collect_one(self) -> None:
        path, future = self._queue.popleft()
        try:
            self.written.append(future.result())
        except OSError as exc:
            raise RsdetError(f"cannot write {path} ({exc}); check that the output folder is writable and the "
                             "disk has space") from exc

    def close(self) -> list[Path]:
        try:
            while self._queue:
                self._collect_one()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return self.written

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._pool.shutdown(wait=True, cancel_futures=True)
