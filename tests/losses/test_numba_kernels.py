"""The numba CPU kernels (rsdet.losses._numba_kernels) against torch and dense computations, and
the kernel selection (rsdet.losses._kernel).  Whole-loss checks against the loop reference run
through both paths in test_ranking_reference.py / test_pairs.py (fixture in kernel_paths.py)."""

import numpy as np
import pytest
import torch
from kernel_paths import edge_case_bins, use_kernel

from rsdet.errors import ConfigError
from rsdet.losses import _kernel, rank_sort_loss
from rsdet.losses._intervals import NegativeIntervals
from rsdet.losses._pairs import PositivePairs
from rsdet.losses._ranking_impl import _prepare, _rank_sort_forward

kernels = pytest.importorskip("rsdet.losses._numba_kernels", reason="numba is not installed")


def _check_bins(x, edges, right, negative=None):
    """bin_entries against searchsorted (bins) and bincount (counts, sums) of the negatives."""
    negative = torch.ones(x.numel(), dtype=torch.bool) if negative is None else negative
    bins, counts, sums = kernels.bin_entries(x.numpy(), negative.numpy(), edges.numpy(), right,
                                             True)
    want = torch.searchsorted(edges, x.double(), right=right)
    want[x.isnan()] = 0
    nb = edges.numel() + 1
    want = torch.where(negative, want, nb)
    assert torch.equal(torch.from_numpy(bins).long(), want)
    # The extra bin (non-negatives) keeps count and sum 0.
    assert torch.equal(torch.from_numpy(counts), torch.bincount(want[negative], minlength=nb + 1))
    expected = torch.bincount(want[negative], weights=x[negative].double(), minlength=nb + 1)
    assert torch.allclose(torch.from_numpy(sums), expected, rtol=1e-12, atol=1e-9,
                          equal_nan=True)     # a NaN entry makes bin 0's sum NaN, as bincount


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("right", [False, True])
def test_bin_entries_match_searchsorted(dtype, right, ties):
    """Entries on and next to the edges, infinities, huge values; tied edges stack in one cell."""
    g = torch.Generator().manual_seed(11)
    edges, x = edge_case_bins(dtype, ties, 20_000, g)
    negative = torch.rand(x.numel(), generator=g) > 0.1
    _check_bins(x, edges, right, negative)


def test_bin_entries_edge_cases():
    """float32 entries next to edges float32 cannot represent; all-equal edges; NaN (bin 0);
    a single edge; a run of 40 tied edges in one cell (binary search) with entries on it."""
    e = torch.tensor([1.0 + 1e-9, 2.0 - 1e-10], dtype=torch.float64)
    x = torch.tensor([1.0, np.nextafter(np.float32(1.0), np.float32(2)), 2.0,
                      np.nextafter(np.float32(2.0), np.float32(0))], dtype=torch.float32)
    for right in (False, True):
        _check_bins(x, e, right)
        _check_bins(torch.tensor([0.4, 0.5, 0.6, float("nan")]),
                    torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64), right)
        _check_bins(torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([0.0], dtype=torch.float64),
                    right)
        edges = torch.sort(torch.cat([torch.full((40,), 0.25), torch.linspace(-3, 3, 50)])
                           .double()).values
        _check_bins(torch.tensor([0.25, 0.2499, 0.2501, -5.0, 5.0] * 3), edges, right)


def _dense_mask(label_rank, score_rank, lab, sco):
    return ((label_rank[None, None, :] < lab[:, None, None])
            & (score_rank[None, None, :] < sco[:, :, None])).double()      # (Q, T, P)


@pytest.mark.parametrize("p,q", [(1, 3), (97, 400), (300, 50)])
def test_dominance_sums_and_spread_match_dense(p, q):
    g = torch.Generator().manual_seed(p)
    label_rank, score_rank = torch.randperm(p, generator=g), torch.randperm(p, generator=g)
    lab = torch.randint(0, p + 1, (q,), generator=g)
    sco = torch.randint(0, p + 1, (q, 2), generator=g)
    lab[:3], sco[:3, 0] = torch.tensor([0, p, p]), torch.tensor([p, 0, p])
    mask = _dense_mask(label_rank, score_rank, lab, sco)
    w = torch.randn(p, 3, generator=g, dtype=torch.float64)
    got = kernels.dominance_sums(label_rank.numpy(), score_rank.numpy(), w.numpy(), lab.numpy(),
                                 sco.numpy())
    assert np.allclose(got, torch.einsum("qtj,jm->qtm", mask, w).numpy(), rtol=0, atol=1e-12)
    u = torch.randn(q, 2, 3, generator=g, dtype=torch.float64)
    got = kernels.dominance_spread(label_rank.numpy(), score_rank.numpy(), lab.numpy(),
                                   sco.numpy(), u.numpy())
    assert np.allclose(got, torch.einsum("qtj,qtm->jm", mask, u).numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("delta", [0.0, 0.25, 0.5])
def test_window_limits_and_edges_match_torch(delta, monkeypatch):
    """Logits on a grid of step delta: ties, and window edges that coincide with logits and
    with other edges (lower edges first on ties)."""
    use_kernel(monkeypatch, "torch")
    g = torch.Generator().manual_seed(4)
    s = (torch.round(torch.randn(3000, generator=g) * 4) / 4).double()
    pairs = PositivePairs(s, delta)
    sorted_s = s[pairs.order].contiguous().numpy()
    lo, hi = kernels.window_limits(sorted_s, pairs.order.numpy(), delta)
    assert np.array_equal(lo, pairs.lo.numpy()) and np.array_equal(hi, pairs.hi.numpy())
    if delta > 0:
        iv = NegativeIntervals(torch.zeros(3), torch.ones(3, dtype=torch.bool), s, delta,
                               pairs.order)
        edges, lo_pos, hi_pos = kernels.window_edges(sorted_s, pairs.order.numpy(), delta)
        assert np.array_equal(edges, iv.edges.numpy())
        assert np.array_equal(lo_pos, iv.lo_pos.numpy())
        assert np.array_equal(hi_pos, iv.hi_pos.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_fused_forward_matches_torch_plan(delta, dtype, monkeypatch):
    """The fused numba RS forward gives the torch path's losses, bins (exactly) and gradient
    tables (to rounding; left edges exactly)."""
    g = torch.Generator().manual_seed(8)
    x = (torch.round(torch.randn(30_000, generator=g) * 8) / 8).to(dtype)
    t = torch.zeros(30_000, dtype=dtype)
    t[torch.randperm(30_000, generator=g)[:3000]] = -1.0
    pos = torch.randperm(30_000, generator=g)[:700]
    t[pos] = torch.round(torch.rand(700, generator=g, dtype=dtype) * 8) / 8 + 0.05
    plans = {}
    for name in ("torch", "numba"):
        use_kernel(monkeypatch, name)
        plans[name] = _rank_sort_forward(x, t, delta)
    (losses_t, plan_t), (losses_n, plan_n) = plans["torch"], plans["numba"]
    for a, b in zip(losses_t, losses_n):
        assert a.dtype == b.dtype and abs(a.item() - b.item()) <= 1e-12
    assert torch.equal(plan_t.bins.long(), plan_n.bins.long())
    assert torch.equal(plan_t.pos_index, plan_n.pos_index)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-9)
    assert torch.allclose(plan_t.pos_grad, plan_n.pos_grad, **tol)
    assert torch.allclose(plan_t.value, plan_n.value, **tol)
    if delta > 0:
        assert torch.allclose(plan_t.slope, plan_n.slope, **tol)
        assert torch.equal(plan_t.left, plan_n.left)
    else:
        assert plan_n.slope is None and plan_n.left is None


def test_selection(monkeypatch):
    cpu = torch.zeros(3)
    monkeypatch.setenv(_kernel.ENV, "torch")
    assert _kernel.numba_kernels(cpu) is None
    monkeypatch.setenv(_kernel.ENV, "auto")
    assert _kernel.numba_kernels(cpu) is kernels
    assert _kernel.numba_kernels(torch.zeros(3, device="meta")) is None   # off the CPU: torch
    monkeypatch.setenv(_kernel.ENV, "fast")
    with pytest.raises(ConfigError, match="RSDET_LOSS_KERNEL='fast'"):
        _kernel.numba_kernels(cpu)


def test_without_numba_auto_falls_back_and_numba_raises(monkeypatch):
    """numba not importable: auto runs the torch code (same result), numba is a clear error."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, generator=g)
    t = torch.zeros(5000)
    t[:600] = torch.rand(600, generator=g) + 0.01
    monkeypatch.setenv(_kernel.ENV, "auto")
    xn = x.clone().requires_grad_()
    rn, sn = rank_sort_loss(xn, t)
    (rn + sn).backward()
    monkeypatch.setattr(_kernel, "_module", None)
    monkeypatch.setattr(_kernel, "_import_error", "ModuleNotFoundError: No module named 'numba'")
    assert _kernel.numba_kernels(x) is None
    xt = x.clone().requires_grad_()
    rt, st = rank_sort_loss(xt, t)
    (rt + st).backward()
    assert abs(rt.item() - rn.item()) <= 1e-6 and abs(st.item() - sn.item()) <= 1e-6
    assert torch.allclose(xt.grad, xn.grad, rtol=1e-4, atol=1e-8)
    monkeypatch.setenv(_kernel.ENV, "numba")
    with pytest.raises(ConfigError, match="pip install"):
        rank_sort_loss(x, t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("positive", ["gt0", "eq1"])
def test_split_targets_matches_torch(positive, dtype, monkeypatch):
    """Negatives t == 0; positives t > 0 (RS) or t == 1 (AP/aLRP); NaN, -1, -0.0 and 0.5 too."""
    t = torch.tensor([0.0, -0.0, 1.0, 0.5, -1.0, float("nan"), 1.0, 0.0, 2.0, 1e-7],
                     dtype=dtype).repeat(3).view(5, 6)
    x = torch.randn(5, 6, dtype=dtype)
    out = {}
    for name in ("torch", "numba"):
        use_kernel(monkeypatch, name)
        out[name] = _prepare(x, t, positive)
    for a, b in zip(out["torch"], out["numba"]):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_unwritable_cache_retries_in_temp_dir(monkeypatch):
    """numba refuses cached functions when no cache folder is writable ("cannot cache ..."):
    the import is retried with numba's cache in a per-user temp folder; other errors propagate."""
    import numba

    calls = []

    def fake_import(name):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("cannot cache function 'bin_entries': no locator available")
        return kernels

    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    monkeypatch.setattr(_kernel.importlib, "import_module", fake_import)
    assert _kernel._import_kernels() is kernels
    assert calls == ["rsdet.losses._numba_kernels"] * 2
    assert numba.config.CACHE_DIR == _kernel.fallback_cache_dir()

    def broken(name):
        raise RuntimeError("something else")

    monkeypatch.setattr(_kernel.importlib, "import_module", broken)
    with pytest.raises(RuntimeError, match="something else"):
        _kernel._import_kernels()
