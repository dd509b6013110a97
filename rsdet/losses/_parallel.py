"""Thread fan-out for the compiled CPU kernels, and their fixed work partition.

The numba kernels (:mod:`rsdet.losses._numba_kernels`) release the GIL (``nogil=True``), so
plain Python threads run them in parallel.  This is used instead of numba's ``parallel=True``
(docs/losses.md, "Threads and determinism"): numba's OpenMP layer would be a second OpenMP
runtime next to torch's, whose spinning workers compete for the same cores, and it is not
fork-safe; threads that block on a queue are neither.

Determinism: the *work partition* (how many blocks, which entries or positives each holds)
depends only on the problem sizes (:func:`blocks`), never on the thread count; every block
writes its own output slots, and the reductions over blocks run afterwards in block order.
Which thread runs a block does not change a single bit of the result.

The thread count is torch's (``torch.get_num_threads()``, read at every call), so
``torch.set_num_threads`` and ``OMP_NUM_THREADS`` govern the losses as they govern torch.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import torch

# Work partition (problem sizes only; tests lower these to exercise many blocks on small inputs).
ENTRY_BLOCK_MIN = 1 << 14      # entries per block at least ...
ENTRIES_PER_BIN = 4            # ... and at least this many per histogram bin (merge cost)
MAX_ENTRY_BLOCKS = 64
PAIR_BLOCK_MIN = 2048          # positives per label block of RS's sorting terms, at least
MAX_PAIR_BLOCKS = 8
# A batch of tasks runs on several threads only when it has at least this much work (entries
# or positive-pair operations): below it, waking a thread costs more than it saves.
PARALLEL_MIN_WORK = 1 << 15
# Splitting the targets (two cheap passes) goes parallel from this many entries on.
SPLIT_PARALLEL_MIN = 1 << 18

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)      # (pid, workers) the pool was made for


def num_threads() -> int:
    """Threads the losses may use: torch's intra-op thread count."""
    return max(1, torch.get_num_threads())


def _pow2_floor(v: int) -> int:
    return 1 << (max(1, v).bit_length() - 1)


def entry_blocks(n: int, num_bins: int) -> int:
    """Blocks the N entries are cut into (a power of two, from N and the number of bins only):
    each block keeps its own per-bin histogram, merged in block order afterwards, so a block
    should hold at least ``ENTRIES_PER_BIN`` entries per bin and ``ENTRY_BLOCK_MIN`` entries."""
    per = max(ENTRY_BLOCK_MIN, ENTRIES_PER_BIN * num_bins)
    return min(MAX_ENTRY_BLOCKS, _pow2_floor(n // per))


def pair_blocks(p: int) -> int:
    """Label blocks of RS's sorting terms (a power of two, from P only): each block sweeps
    its own Fenwick tree; a block costs O(P) besides (a prefix-sum row), so blocks stay large."""
    return min(MAX_PAIR_BLOCKS, _pow2_floor(p // PAIR_BLOCK_MIN))


def block_bounds(n: int, num_blocks: int, b: int) -> tuple[int, int]:
    """Half-open range of block ``b`` when ``n`` items are cut into ``num_blocks`` near-equal
    contiguous blocks."""
    return (n * b) // num_blocks, (n * (b + 1)) // num_blocks


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool, (re)made after a fork or when more workers are needed."""
    global _pool, _pool_key
    with _lock:
        pid = os.getpid()
        if _pool is None or _pool_key[0] != pid or _pool_key[1] < workers:
            # A pool inherited through fork has no threads in this process: never reuse it.
            if _pool is not None and _pool_key[0] == pid:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rsdet-loss")
            _pool_key = (pid, workers)
        return _pool


def run(tasks: Sequence[Callable[[], object]], threads: int, work: int = PARALLEL_MIN_WORK) -> None:
    """Run every task once, on up to ``threads`` threads (the caller's included).

    Tasks must write disjoint outputs; they are taken in list order by whichever thread is
    free, so the result must not depend on which thread runs which task (it does not for the
    kernels, see the module docstring).  ``work`` (entries or pair operations of the whole
    batch) below ``PARALLEL_MIN_WORK`` runs everything on the calling thread.
    """
    if threads <= 1 or len(tasks) <= 1 or work < PARALLEL_MIN_WORK:
        for task in tasks:
            task()
        return
    workers = min(threads, len(tasks)) - 1
    pool = _executor(workers)
    lock = threading.Lock()
    position = [0]

    def drain():
        while True:
            with lock:
                i = position[0]
                position[0] = i + 1
            if i >= len(tasks):
                return
            tasks[i]()

    futures = [pool.submit(drain) for _ in range(workers)]
    try:
        drain()
    finally:
        errors = [f.exception() for f in futures]     # waits: no task outlives the call
    for error in errors:
        if error is not None:
            raise error
