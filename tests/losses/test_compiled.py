"""The compiled CPU path (rsdet.losses._compiled): the same plans as the torch code, and the same
bits for every thread count (docs/losses.md, "Threads and determinism")."""

import numpy as np
import pytest
import torch
from kernel_paths import many_blocks, use_kernel

from rsdet.losses import _parallel, alrp_loss, ap_loss, positive_ranks, rank_sort_loss
from rsdet.losses._ranking_impl import _alrp_forward, _ap_forward, _rank_sort_forward

pytest.importorskip("rsdet.losses._numba_kernels", reason="numba is not installed")


def _case(n, p, dtype, seed=8):
    g = torch.Generator().manual_seed(seed)
    x = (torch.round(torch.randn(n, generator=g) * 8) / 8).to(dtype)      # ties everywhere
    t = torch.zeros(n, dtype=dtype)
    t[torch.randperm(n, generator=g)[: n // 10]] = -1.0
    pos = torch.randperm(n, generator=g)[:p]
    t[pos] = torch.round(torch.rand(p, generator=g, dtype=dtype) * 8) / 8 + 0.05
    x[pos] += 1.0
    return x, t, pos


def _binary(t):
    return torch.where(t > 0, torch.ones_like(t), t)


def _forwards(x, t, delta):
    b = _binary(t)
    err = torch.rand(int((b == 1).sum()), generator=torch.Generator().manual_seed(1),
                     dtype=torch.float64)
    return {"rs": _rank_sort_forward(x, t, delta), "ap": _ap_forward(x, b, max(delta, 0.25)),
            "alrp": _alrp_forward(x, b, err, delta)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_plans_match_torch(delta, dtype, monkeypatch):
    """RS, AP and aLRP through the kernels: the torch code's values, bins (exactly), positive
    gradients and gradient tables (to rounding; left edges exactly), aLRP's rank and order."""
    x, t, _ = _case(30_000, 700, dtype)
    out = {}
    for name in ("torch", "numba-mt"):
        use_kernel(monkeypatch, name)
        out[name] = _forwards(x, t, delta)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-9)
    for loss in ("rs", "ap", "alrp"):
        (vals_t, plan_t), (vals_n, plan_n) = out["torch"][loss], out["numba-mt"][loss]
        for a, b in zip(vals_t if loss != "ap" else [vals_t], vals_n if loss != "ap" else [vals_n]):
            assert a.dtype == b.dtype
            assert torch.allclose(a.double(), b.double(), rtol=1e-12 if a.dim() else 0,
                                  atol=1e-12 if dtype == torch.float64 or a.dim() == 0 else 1e-6)
        assert torch.equal(plan_t.bins.long(), plan_n.bins.long())
        assert torch.equal(plan_t.pos_index, plan_n.pos_index)
        assert torch.allclose(plan_t.pos_grad, plan_n.pos_grad, **tol)
        assert torch.allclose(plan_t.value, plan_n.value, **tol)
        assert plan_n.grad_l1.item() == pytest.approx(plan_t.grad_l1.item(), rel=1e-5)
        if delta > 0 or loss == "ap":
            assert torch.allclose(plan_t.slope, plan_n.slope, **tol)
            assert torch.equal(plan_t.left, plan_n.left)
        else:
            assert plan_n.slope is None and plan_n.left is None


def _everything(x, t, delta):
    """Values, ranks and gradients of all three losses (and positive_ranks) as numpy arrays."""
    b = _binary(t)
    err = torch.rand(int((b == 1).sum()), generator=torch.Generator().manual_seed(1))
    got = []
    for loss in ("rs", "ap", "alrp"):
        xr = x.clone().requires_grad_()
        if loss == "rs":
            r, s = rank_sort_loss(xr, t, delta)
            outs = [r, s]
        elif loss == "ap":
            outs = [ap_loss(xr, b, max(delta, 0.25))]
        else:
            o = alrp_loss(xr, b, err, delta)
            outs = [o.cls_loss, o.rank, o.order]
        (3.0 * outs[0]).backward()
        got += [o.detach().numpy() for o in outs] + [xr.grad.numpy()]
    return got + [positive_ranks(x, t, delta).numpy()]


@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_identical_for_every_thread_count(delta, monkeypatch):
    """torch.set_num_threads(k) for k = 1, 2, 3, 4: every value, rank, order and gradient of
    RS, AP and aLRP bit for bit the same — with the default blocks (N = 2^17 gives several)
    and with blocks of 64 entries."""
    use_kernel(monkeypatch, "numba")
    monkeypatch.setattr(_parallel, "num_threads", lambda: max(1, torch.get_num_threads()))
    x, t, _ = _case(1 << 17, 3000, torch.float32, seed=3)
    before = torch.get_num_threads()
    try:
        for small in (False, True):
            if small:
                many_blocks(monkeypatch)
                monkeypatch.setattr(_parallel, "num_threads",
                                    lambda: max(1, torch.get_num_threads()))
            results = []
            for k in (1, 2, 3, 4):
                torch.set_num_threads(k)
                results.append(_everything(x, t, delta))
            for other in results[1:]:
                for a, b in zip(results[0], other):
                    assert a.dtype == b.dtype and np.array_equal(a, b)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_logits_and_integer_targets(dtype, monkeypatch):
    """Half logits are computed in float32 (values float32, gradient in the logits' dtype);
    targets of any dtype (here int64 for AP) are read as numbers."""
    x, t, _ = _case(5000, 80, torch.float32)
    x = x.to(dtype)
    out = {}
    for name in ("torch", "numba"):
        use_kernel(monkeypatch, name)
        xr = x.clone().requires_grad_()
        r, s = rank_sort_loss(xr, t)
        (r + s).backward()
        xa = x.clone().requires_grad_()
        loss = ap_loss(xa, _binary(t).long())
        loss.backward()
        out[name] = (r, s, xr.grad, loss, xa.grad)
    for a, b in zip(out["torch"], out["numba"]):
        assert a.dtype == b.dtype
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-6)


def test_zero_positives_and_loc_error_check(monkeypatch):
    use_kernel(monkeypatch, "numba")
    x = torch.randn(100, requires_grad=True)
    r, s = rank_sort_loss(x, torch.zeros(100))
    (r + s).backward()
    assert r.item() == 0 and s.item() == 0 and torch.equal(x.grad, torch.zeros(100))
    o = alrp_loss(x, torch.zeros(100), torch.zeros(0))
    assert o.cls_loss.item() == 0 and o.rank.numel() == 0 and o.order.dtype == torch.int64
    assert positive_ranks(x, torch.zeros(100)).numel() == 0
    with pytest.raises(ValueError, match="loc_errors has 3 entries but targets has 0"):
        alrp_loss(x, torch.zeros(100), torch.zeros(3))
