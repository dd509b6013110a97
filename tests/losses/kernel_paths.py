"""Run loss tests through every CPU implementation: the torch code, the numba kernels on one
thread, and the numba kernels on several threads with the work cut into many small blocks.

``kernel`` is a parametrised fixture (import it into a test module); ``use_kernel`` sets
RSDET_LOSS_KERNEL for one test and skips the numba cases when numba is not installed.
``numba-mt`` runs 4 threads (whatever the machine has) over blocks of 64 entries and label
blocks of 16 positives, so that small test inputs go through the parallel code, the per-block
histograms and sorting-term rows, and their merge.
"""

import pytest
import torch

from rsdet.losses import _kernel, _parallel

KERNELS = ["torch", "numba", "numba-mt"]


def many_blocks(monkeypatch, threads: int = 4) -> None:
    """Small fixed blocks (64 entries, 16 positives) and ``threads`` threads for every batch."""
    monkeypatch.setattr(_parallel, "ENTRY_BLOCK_MIN", 64)
    monkeypatch.setattr(_parallel, "ENTRIES_PER_BIN", 0)
    monkeypatch.setattr(_parallel, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(_parallel, "SPLIT_PARALLEL_MIN", 0)
    monkeypatch.setattr(_parallel, "PAIR_BLOCK_MIN", 16)
    monkeypatch.setattr(_parallel, "num_threads", lambda: threads)


def use_kernel(monkeypatch, name: str) -> None:
    if name.startswith("numba") and not _kernel.numba_available():
        pytest.skip("numba is not installed (the torch code is used)")
    monkeypatch.setenv(_kernel.ENV, "numba" if name.startswith("numba") else name)
    if name == "numba-mt":
        many_blocks(monkeypatch)
    elif name == "numba":
        monkeypatch.setattr(_parallel, "num_threads", lambda: 1)


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    use_kernel(monkeypatch, request.param)
    return request.param


def edge_case_bins(dtype: torch.dtype, ties: bool, n_random: int, generator: torch.Generator):
    """Sorted float64 window edges of 300 positives (delta 0.3, plus the logits themselves; ``ties``
    rounds them so edges stack in one grid cell) and entries of ``dtype`` on and next to every edge,
    infinities and huge values, after ``n_random`` random logits: the bucketing tests' inputs."""
    s = torch.randn(300, generator=generator)
    if ties:
        s = torch.round(s * 8) / 8
    edges = torch.sort(torch.cat([s - 0.3, s + 0.3, s]).double()).values
    x = torch.cat([torch.randn(n_random, generator=generator) * 3, s, s + 0.3, s - 0.3,
                   torch.tensor([float("inf"), -float("inf"), 1e30, -1e30])]).to(dtype)
    return edges, x
