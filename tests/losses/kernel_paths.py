"""Run loss tests through both CPU implementations: the torch code and the numba kernels.

``kernel`` is a parametrised fixture (import it into a test module); ``use_kernel`` sets
RSDET_LOSS_KERNEL for one test and skips the numba case when numba is not installed.
"""

import pytest

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
