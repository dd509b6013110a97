"""Run loss tests through both CPU implementations: the torch code and the numba kernels.

``kernel`` is a parametrised fixture (import it into a test module); ``use_kernel`` sets
RSDET_LOSS_KERNEL for one test and skips the numba case when numba is not installed.
"""

import pytest
import torch

from rsdet.losses import _kernel

KERNELS = ["torch", "numba"]


def use_kernel(monkeypatch, name: str) -> None:
    if name == "numba" and not _kernel.numba_available():
        pytest.skip("numba is not installed (the torch code is used)")
    monkeypatch.setenv(_kernel.ENV, name)


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
