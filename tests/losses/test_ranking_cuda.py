"""Ranking losses on CUDA: same numbers as on the CPU, and no hidden host-device synchronisation.

Skipped without CUDA (the CPU suite covers the maths).  The only synchronisation a ranking loss
may make is the ``nonzero`` that finds the positives in the forward pass (every later shape is
their number); backward makes none.  See docs/losses.md ("Devices and synchronisation").
"""

import warnings

import pytest
import torch

from rsdet.losses import alrp_loss, ap_loss, rank_sort_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _case(seed, n=30_000, p=300, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 2 - 3
    x[: n // 4] = torch.round(x[: n // 4] * 2) / 2          # ties, also on window edges
    t = torch.zeros(n)
    t[torch.randperm(n, generator=g)[: n // 20]] = -1.0
    idx = torch.randperm(n, generator=g)[:p]
    t[idx] = torch.round(torch.rand(p, generator=g) * 8) / 8 + 0.05   # tied labels
    x[idx] += 2.0
    return x.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype)


def _run(loss, x, t, delta):
    x = x.detach().clone().requires_grad_()
    if loss == "rs":
        rank, sort = rank_sort_loss(x, t, delta)
        value, first = rank + sort, rank
    else:
        b = torch.where(t > 0, torch.ones_like(t), t)
        if loss == "ap":
            first = value = ap_loss(x, b, delta)
        else:
            err = torch.linspace(0, 2, int((b == 1).sum()), device=x.device, dtype=x.dtype)
            first = value = alrp_loss(x, b, err, delta).cls_loss
    return x, value, first


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta", [0.0, 0.5])
@pytest.mark.parametrize("loss", ["rs", "ap", "alrp"])
def test_cuda_matches_cpu(loss, delta, dtype):
    if loss == "ap" and delta == 0:
        delta = 0.25
    x, t = _case(3, dtype=dtype)
    xc, vc, _ = _run(loss, x, t, delta)
    vc.backward()
    xg, vg, _ = _run(loss, x.cuda(), t.cuda(), delta)
    vg.backward()
    assert vg.device.type == "cuda" and xg.grad.device.type == "cuda"
    tol = 1e-10 if dtype == torch.float64 else 1e-6   # CUDA sums in another order
    assert vg.item() == pytest.approx(vc.item(), abs=tol)
    assert torch.allclose(xg.grad.cpu(), xc.grad, atol=tol, rtol=1e-4)


def _syncs(record):
    return [str(w.message) for w in record if "synchroniz" in str(w.message)]


@pytest.mark.parametrize("delta", [0.0, 0.5])
@pytest.mark.parametrize("loss", ["rs", "ap", "alrp"])
def test_no_host_device_sync_beyond_the_positive_count(loss, delta):
    if loss == "ap" and delta == 0:
        delta = 0.25
    x, t = _case(5, device="cuda")
    _, value, _ = _run(loss, x, t, delta)   # warm-up: lazy CUDA initialisation may synchronise
    value.backward()
    torch.cuda.synchronize()
    if loss == "alrp":  # the loc_errors' length needs the positive count; build it outside
        b = torch.where(t > 0, torch.ones_like(t), t)
        err = torch.linspace(0, 2, int((b == 1).sum()), device="cuda")
    xr = x.detach().clone().requires_grad_()
    with warnings.catch_warnings(record=True) as fwd:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            if loss == "rs":
                out = sum(rank_sort_loss(xr, t, delta))
            elif loss == "ap":
                out = ap_loss(xr, torch.where(t > 0, torch.ones_like(t), t), delta)
            else:
                out = alrp_loss(xr, b, err, delta).cls_loss
        finally:
            torch.cuda.set_sync_debug_mode("default")
    with warnings.catch_warnings(record=True) as bwd:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert len(_syncs(fwd)) <= 1, _syncs(fwd)      # the nonzero that finds the positives
    assert _syncs(bwd) == [], _syncs(bwd)
    assert torch.isfinite(xr.grad).all()
