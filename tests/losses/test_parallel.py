"""Thread fan-out and the fixed work partition (rsdet.losses._parallel)."""

import os
import threading

import pytest
import torch

from rsdet.losses import _parallel


def test_partition_depends_on_sizes_only():
    """Blocks are powers of two fixed by N and the number of bins (never by threads), cover
    every entry exactly once, and hold enough entries per bin to make the merge cheap."""
    before = torch.get_num_threads()
    try:
        got = {}
        for k in (1, 3):
            torch.set_num_threads(k)
            got[k] = [_parallel.entry_blocks(n, nb) for n in (10, 100_000, 4_000_000)
                      for nb in (1, 201, 10_001)]
        assert got[1] == got[3]
    finally:
        torch.set_num_threads(before)
    assert _parallel.entry_blocks(100_000, 10_001) == 2       # >= 4 entries per bin
    assert _parallel.entry_blocks(100_000, 201) == 4          # >= 2^14 entries per block
    assert _parallel.entry_blocks(10, 1) == 1
    assert _parallel.entry_blocks(4_000_000, 201) == _parallel.MAX_ENTRY_BLOCKS
    for n, blocks in ((10, 3), (1000, 7), (5, 8)):
        bounds = [_parallel.block_bounds(n, blocks, b) for b in range(blocks)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_run_uses_several_threads_and_every_task_once():
    """With 3 threads the tasks run concurrently (a barrier that needs 3 parties passes); each
    task runs exactly once; the caller's thread takes part."""
    barrier = threading.Barrier(3, timeout=20)
    seen = []
    lock = threading.Lock()

    def task(i):
        if i < 3:
            barrier.wait()
        with lock:
            seen.append((i, threading.get_ident()))

    _parallel.run([lambda i=i: task(i) for i in range(10)], threads=3)
    assert sorted(i for i, _ in seen) == list(range(10))
    idents = {ident for _, ident in seen}
    assert len(idents) == 3 and threading.get_ident() in idents


def test_run_inline_for_one_thread_or_little_work():
    idents = []
    tasks = [lambda: idents.append(threading.get_ident()) for _ in range(4)]
    _parallel.run(tasks, threads=1)
    _parallel.run(tasks, threads=4, work=10)
    assert set(idents) == {threading.get_ident()}


def test_run_reraises_after_every_task_finished():
    done = []

    def fail():
        raise ValueError("block 1 failed")

    tasks = [lambda: done.append(0), fail] + [lambda: done.append(2)] * 6
    with pytest.raises(ValueError, match="block 1 failed"):
        _parallel.run(tasks, threads=2)
    assert len(done) == 7


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pool_is_renewed_after_fork():
    """A pool inherited through fork has no threads in the child: the child makes its own."""
    _parallel.run([lambda: None] * 4, threads=2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                      # child: must not hang on the parent's pool
        code = 1
        try:
            out = []
            _parallel.run([lambda: out.append(1)] * 4, threads=2)
            code = 0 if out == [1] * 4 else 1
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    status = os.read(read, 1)
    os.waitpid(pid, 0)
    assert status == bytes([0])
