"""PNG files written beside the work: encoding (zlib, which releases the GIL) runs in a background
thread while the caller goes on with the next image's inference, so writing pictures adds little to
the wall time of ``rsdet predict`` on a machine with a spare core (scripts/bench_predict.py)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from torch import Tensor

from rsdet.errors import RsdetError
from rsdet.vis.draw import save_png


class PngWriter:
    """``submit(image, path)`` queues a uint8 (3, H, W) image; at most ``pending`` images wait (the
    caller blocks beyond that, bounding memory); leaving the ``with`` block waits for every write and
    raises the first error (an unwritable folder, a full disk) naming the file."""

    def __init__(self, pending: int = 8, threads: int = 1):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rsdet-png")
        self._queue: deque[tuple[Path, Future]] = deque()
        self._pending = max(1, int(pending))
        self.written: list[Path] = []

    def submit(self, image: Tensor, path: str | Path) -> None:
        while len(self._queue) >= self._pending:
            self._collect_one()
        self._queue.append((Path(path), self._pool.submit(save_png, image.contiguous(), path)))

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
