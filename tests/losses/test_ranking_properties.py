"""Properties of the ranking losses and exactness of the interval machinery."""

import numpy as np
import pytest
import torch
from kernel_paths import edge_case_bins, kernel  # noqa: F401  (fixture)

from rsdet.losses import alrp_loss, ap_loss, positive_ranks, rank_sort_loss, ranking_gradient_l1
from rsdet.losses._intervals import NegativeIntervals, bucketize


def _case(seed, n=20_000, p=200, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 2 - 3
    x[: n // 4] = torch.round(x[: n // 4] * 2) / 2
    t = torch.zeros(n)
    idx = torch.randperm(n, generator=g)[:p]
    t[idx] = torch.rand(p, generator=g) * 0.95 + 0.05
    x[idx] += 2.0
    t[torch.randperm(n, generator=g)[: n // 20]] = -1.0
    t[idx] = torch.rand(p, generator=g) * 0.95 + 0.05
    return x.to(dtype), t.to(dtype)


@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("loss", ["rs", "ap", "alrp"])
def test_gradient_sums_to_zero_and_negatives_nonnegative(delta, loss, kernel):
    x, t = _case(int(delta * 10) + len(loss))
    x = x.double().requires_grad_()
    t = t.double()
    if loss == "rs":
        out = rank_sort_loss(x, t, delta)
        (out.ranking_loss + out.sorting_loss).backward()
        first = out.ranking_loss
    else:
        b = torch.where(t > 0, torch.ones_like(t), t)
        if loss == "ap":
            first = ap_loss(x, b, max(delta, 0.5))
        else:
            first = alrp_loss(x, b, torch.rand(int((b == 1).sum()), dtype=torch.float64),
                              max(delta, 0.5)).cls_loss
        first.backward()
    g = x.grad
    assert abs(g.sum().item()) < 1e-12
    assert torch.all(g[t == 0] >= 0)
    assert torch.all(g[t < 0] == 0)
    assert ranking_gradient_l1(first).item() == pytest.approx(g.abs().sum().item(), rel=1e-9)


def test_positive_own_update_can_be_positive_through_sorting():
    """A high-logit, low-label positive is demoted (supplementary Eq. S16)."""
    x = torch.tensor([5.0, 0.0, -1.0], requires_grad=True)
    rank, sort = rank_sort_loss(x, torch.tensor([0.1, 0.9, 0.0]))
    (rank + sort).backward()
    assert x.grad[0] > 0 and x.grad[1] < 0


def test_irrelevant_negatives_get_exactly_zero():
    x = torch.tensor([0.0, -0.4, -0.6, -5.0], requires_grad=True)
    rank, sort = rank_sort_loss(x, torch.tensor([1.0, 0, 0, 0]), 0.5)
    (rank + sort).backward()
    assert x.grad[2].item() == 0.0 and x.grad[3].item() == 0.0 and x.grad[1].item() > 0


def test_positive_ranks_equals_alrp_rank():
    x, t = _case(3, n=5000, p=50)
    b = torch.where(t > 0, torch.ones_like(t), t)
    out = alrp_loss(x, b, torch.zeros(50), delta=0.5)
    assert torch.allclose(positive_ranks(x, t, delta=0.5), out.rank, rtol=1e-6)


def test_independent_of_shape_and_entry_order(kernel):
    x, t = _case(5, n=6000, p=60)
    perm = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))
    xa = x.clone().requires_grad_()
    ra, sa = rank_sort_loss(xa.view(60, 100), t.view(60, 100))
    (ra + sa).backward()
    xb = x[perm].clone().requires_grad_()
    rb, sb = rank_sort_loss(xb, t[perm])
    (rb + sb).backward()
    assert ra.item() == pytest.approx(rb.item(), abs=1e-7)
    assert sa.item() == pytest.approx(sb.item(), abs=1e-7)
    assert torch.allclose(xa.grad[perm], xb.grad, atol=1e-9)


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("right", [False, True])
def test_bucketize_matches_searchsorted(dtype, right, ties):
    """Tied edges stack in one grid cell (binary-search fallback); distinct ones are scanned."""
    g = torch.Generator().manual_seed(11)
    edges, x = edge_case_bins(dtype, ties, 50_000, g)
    got = bucketize(x, edges, right)
    want = torch.searchsorted(edges, x.double(), right=right)
    assert torch.equal(got.long(), want)


def test_bucketize_float32_edges_between_representable_values():
    """Edges that float32 cannot represent: entries on either neighbour must still be exact."""
    e = torch.tensor([1.0 + 1e-9, 2.0 - 1e-10], dtype=torch.float64)
    x = torch.tensor([1.0, np.nextafter(np.float32(1.0), np.float32(2)), 2.0,
                      np.nextafter(np.float32(2.0), np.float32(0))], dtype=torch.float32)
    for right in (False, True):
        assert bucketize(x, e, right).tolist() == [0, 1, 2, 1]


def test_bucketize_degenerate_edges_and_nan():
    e = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    x = torch.tensor([0.4, 0.5, 0.6, float("nan")])
    assert bucketize(x, e, right=False).tolist() == [0, 0, 3, 0]
    assert bucketize(x, e, right=True).tolist() == [0, 3, 3, 0]


def test_bucketize_many_edges_per_entry():
    """2P edges not far below N (the grid then has up to N cells): still exact."""
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2500, generator=g) * 1.5 - 2.0
    edges = torch.sort(torch.cat([s - 0.5, s + 0.5]).double()).values
    x = torch.randn(6000, generator=g) * 1.5 - 3.0
    for right in (False, True):
        want = torch.searchsorted(edges, x.double(), right=right)
        assert torch.equal(bucketize(x, edges, right).long(), want)


@pytest.mark.parametrize("delta", [0.25, 0.5])
def test_window_edges_merge_equals_stable_sort(delta):
    """The edges merged from the two sorted runs equal a stable sort of cat([s - d, s + d]),
    ties between a lower and an upper edge included (s on a grid of step 2 delta)."""
    g = torch.Generator().manual_seed(4)
    s = (torch.round(torch.randn(3000, generator=g) * 2) / 2).double()
    x = torch.randn(10, generator=g)
    iv = NegativeIntervals(x, torch.ones(10, dtype=torch.bool), s, delta)
    sorted_edges, perm = torch.sort(torch.cat([s - delta, s + delta]), stable=True)
    assert torch.equal(iv.edges, sorted_edges)
    where = torch.empty_like(perm)
    where[perm] = torch.arange(perm.numel())
    assert torch.equal(iv.edges[iv.lo_pos], s - delta)
    assert torch.equal(iv.edges[iv.hi_pos], s + delta)
    assert torch.equal(iv.lo_pos, where[:3000]) and torch.equal(iv.hi_pos, where[3000:])


@pytest.mark.parametrize("delta", [0.0, 0.25])
def test_false_positive_counts_exact(delta):
    g = torch.Generator().manual_seed(2)
    x = torch.round(torch.randn(30_000, generator=g) * 4) / 4
    pos = torch.randperm(30_000, generator=g)[:100]
    neg = torch.ones(30_000, dtype=torch.bool)
    neg[pos] = False
    s = x[pos].double()
    iv = NegativeIntervals(x, neg, s, delta)
    diff = x[neg].double()[None, :] - s[:, None]
    h = (diff >= 0).double() if delta == 0 else (diff / (2 * delta) + 0.5).clamp(0, 1)
    assert torch.allclose(iv.false_positives(), h.sum(1), atol=1e-9, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, t = _case(9)
    xc = x.clone().requires_grad_()
    rc, sc = rank_sort_loss(xc, t)
    (rc + sc).backward()
    xg = x.cuda().requires_grad_()
    rg, sg = rank_sort_loss(xg, t.cuda())
    (rg + sg).backward()
    assert rg.device.type == "cuda" and xg.grad.device.type == "cuda"
    assert rg.item() == pytest.approx(rc.item(), abs=1e-6)
    assert sg.item() == pytest.approx(sc.item(), abs=1e-6)
    assert torch.allclose(xg.grad.cpu(), xc.grad, atol=1e-7, rtol=1e-4)


def test_autocast_cpu_bfloat16():
    x, t = _case(4, n=2000, p=20)
    x = x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rank, sort = rank_sort_loss(x, t)
    (rank + sort).backward()
    ref = rank_sort_loss(x.detach(), t)
    assert rank.dtype == torch.float32 and rank.item() == pytest.approx(ref[0].item(), abs=1e-7)


def test_saved_state_is_freed_after_backward_and_kept_with_retain_graph(kernel):
    x, t = _case(6, n=3000, p=30)
    x = x.requires_grad_()
    rank, sort = rank_sort_loss(x, t)
    (rank + sort).backward(retain_graph=True)
    first = x.grad.clone()
    (rank + sort).backward()                     # second pass reuses the retained plan
    assert torch.allclose(x.grad, 2 * first)
    with pytest.raises(RuntimeError):
        rank.grad_fn.saved_tensors               # freed: the N-sized bin index is not kept alive
    assert ranking_gradient_l1(rank).item() == pytest.approx(first.abs().sum().item(), rel=1e-5)
