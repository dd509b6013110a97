"""The numba CPU kernels (rsdet.losses._numba_entries, _numba_positives, _numba_sorting) against
torch and dense computations.  Whole-loss checks against the loop reference run through every
path in test_ranking_reference.py / test_pairs.py (fixture in kernel_paths.py); the drivers
and the thread determinism are tested in test_compiled.py."""

import numpy as np
import pytest
import torch
from kernel_paths import edge_case_bins, use_kernel

from rsdet.losses._intervals import NegativeIntervals
from rsdet.losses._pairs import PositivePairs

kernels = pytest.importorskip("rsdet.losses._numba_kernels", reason="numba is not installed")


def _bins(x, t, edges, right, blocks=1):
    """bin_block over ``blocks`` blocks, merged: (bins, count_cum, sum_cum)."""
    n, nb = x.size, edges.size + 1
    base, inv, start, cell_edge = kernels.grid_table(edges, n)
    bins = np.empty(n, dtype=np.int32)
    counts = np.empty((blocks, nb + 1), dtype=np.int64)
    sums = np.empty((blocks, nb + 1))
    for b in range(blocks):
        kernels.bin_block(x, t, edges, right, True, base, inv, start, cell_edge,
                          n * b // blocks, n * (b + 1) // blocks, bins, counts, sums, b)
    assert np.all(counts[:, nb] == 0) and np.all(sums[:, nb] == 0)   # the extra bin stays 0
    return (bins,) + kernels.merge_bins(counts, sums, True)


def _check_bins(x, edges, right, negative=None, blocks=1):
    """Bins against searchsorted; prefix counts and sums against bincount of the negatives."""
    negative = torch.ones(x.numel(), dtype=torch.bool) if negative is None else negative
    t = torch.where(negative, 0.0, -1.0).to(x.dtype)
    bins, count_cum, sum_cum = _bins(x.numpy(), t.numpy(), edges.numpy(), right, blocks)
    want = torch.searchsorted(edges, x.double(), right=right)
    want[x.isnan()] = 0
    nb = edges.numel() + 1
    want = torch.where(negative, want, nb)
    assert torch.equal(torch.from_numpy(bins).long(), want)
    counts = torch.bincount(want[negative], minlength=nb + 1)[:nb]
    assert torch.equal(torch.from_numpy(count_cum), torch.cat([torch.zeros(1).long(),
                                                               counts.cumsum(0)]))
    sums = torch.bincount(want[negative], weights=x[negative].double(), minlength=nb + 1)[:nb]
    expected = torch.cat([torch.zeros(1).double(), sums.cumsum(0)])
    assert torch.allclose(torch.from_numpy(sum_cum), expected, rtol=1e-12, atol=1e-9,
                          equal_nan=True)     # a NaN entry makes the sums from bin 0 on NaN


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("right", [False, True])
def test_bin_block_matches_searchsorted(dtype, right, ties):
    """Entries on and next to the edges, infinities, huge values; tied edges stack in one cell;
    one block and seven."""
    g = torch.Generator().manual_seed(11)
    edges, x = edge_case_bins(dtype, ties, 20_000, g)
    negative = torch.rand(x.numel(), generator=g) > 0.1
    for blocks in (1, 7):
        _check_bins(x, edges, right, negative, blocks)


def test_bin_block_edge_cases():
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gt0", [True, False])
def test_positives_split_matches_torch(gt0, dtype):
    """Positives t > 0 (RS) or t == 1 (AP/aLRP); NaN, -1, -0.0, 0.5 and 1e-7 too; in blocks."""
    t = torch.tensor([0.0, -0.0, 1.0, 0.5, -1.0, float("nan"), 1.0, 0.0, 2.0, 1e-7],
                     dtype=dtype).repeat(30)
    x = torch.randn(300, dtype=dtype)
    want = (t > 0 if gt0 else t == 1).nonzero().squeeze(1)
    tn, xn = t.numpy(), x.numpy()
    bounds = [(0, 7), (7, 7), (7, 150), (150, 300)]
    counts = [kernels.count_positives(tn, gt0, lo, hi) for lo, hi in bounds]
    p = sum(counts)
    index, s, y = np.empty(p, dtype=np.int64), np.empty(p), np.empty(p)
    for (lo, hi), at in zip(bounds, np.cumsum([0] + counts[:-1])):
        kernels.fill_positives(xn, tn, gt0, lo, hi, at, index, s, y)
    assert torch.equal(torch.from_numpy(index), want)
    assert np.array_equal(s, x[want].double().numpy()) and np.array_equal(y, t[want].double())


@pytest.mark.parametrize("n", [5, 255, 3000])
def test_stable_argsort_matches_torch_sort(n):
    """Radix sort (n >= 256) and merge sort of the keys: ties keep index order, -0.0 ties with
    +0.0, infinities at the ends, NaN last; float32 values and genuine float64 values."""
    g = torch.Generator().manual_seed(n)
    for v in (torch.round(torch.randn(n, generator=g) * 4) / 4,
              torch.randn(n, generator=g, dtype=torch.float64) * 1e3):
        v = v.double()
        v[: n // 5] = 0.0
        v[1:: 7] = -0.0
        v[3], v[4] = float("inf"), -float("inf")
        if n > 100:
            v[::50] = float("nan")
            v[n // 2:] = v[: n - n // 2].clone()          # every value twice (ties)
        got = torch.from_numpy(kernels.stable_argsort(v.numpy()))
        assert torch.equal(got, torch.sort(v, stable=True).indices)


@pytest.mark.parametrize("delta", [0.0, 0.25, 0.5])
def test_positive_windows_match_torch(delta, monkeypatch):
    """Logits on a grid of step delta: ties, and window edges that coincide with logits and
    with other edges (lower edges first on ties)."""
    use_kernel(monkeypatch, "torch")
    g = torch.Generator().manual_seed(4)
    s = (torch.round(torch.randn(3000, generator=g) * 4) / 4).double()
    pairs = PositivePairs(s, delta)
    order = kernels.stable_argsort(s.numpy())
    assert np.array_equal(order, pairs.order.numpy())
    rank, lo, hi, edges, lo_pos, hi_pos = kernels.positive_windows(s.numpy(), order, delta)
    assert np.array_equal(rank, pairs.rank.numpy())
    assert np.array_equal(lo, pairs.lo.numpy()) and np.array_equal(hi, pairs.hi.numpy())
    iv = NegativeIntervals(torch.zeros(3), torch.ones(3, dtype=torch.bool), s, delta, pairs.order)
    assert np.array_equal(edges, iv.edges.numpy())
    if delta > 0:
        assert np.array_equal(lo_pos, iv.lo_pos.numpy())
        assert np.array_equal(hi_pos, iv.hi_pos.numpy())
    else:
        assert np.array_equal(lo_pos, iv.first.numpy())


def _dense_mask(label_rank, score_rank, lab, sco):
    return ((label_rank[None, None, :] < lab[:, None, None])
            & (score_rank[None, None, :] < sco[:, :, None])).double()      # (Q, T, P)


def _blocked_dominance(label_order, rank, lab, sco, w, u, blocks):
    """F (sums) and G (spread) from the block kernels, combined as sums_finish / spread_finish
    combine them (rows summed over the blocks below / above, in block order)."""
    p = rank.size
    order = np.argsort(lab, kind="stable")
    q_start = np.concatenate([[0], np.cumsum(np.bincount(lab, minlength=p + 1))])
    cols = np.zeros((p, 4))
    cols[:, : w.shape[1]] = w
    part = np.empty((p, 2, 4))
    rows = np.zeros((blocks - 1, p + 1, 4))
    for k in range(blocks):
        kernels.sums_block(k, blocks, rank, label_order, cols, q_start, order, sco, rows, part)
    rows = np.cumsum(rows, axis=0)
    starts = kernels.block_starts(p, blocks)
    cum = np.zeros((p + 1, 4))
    np.add.at(cum, rank + 1, cols)
    cum = np.cumsum(cum, axis=0)
    full = np.concatenate([np.zeros((1, p + 1, 4)), rows, cum[None]])
    kq = np.searchsorted(starts, lab, side="right") - 1
    kq[lab >= p] = blocks
    f = full[kq[:, None], sco] + np.where((kq < blocks)[:, None, None], part, 0.0)
    out = np.empty((p, u.shape[2]))
    rows = np.zeros((blocks, p + 1, u.shape[2]))
    for k in range(blocks):
        kernels.spread_block(k, blocks, rank, label_order, q_start, order, sco, u, rows, out)
    rows = np.cumsum(rows[::-1], axis=0)[::-1]
    label_rank = np.argsort(label_order)
    kj = np.searchsorted(starts, label_rank, side="right") - 1
    return f[:, :, : w.shape[1]], out + rows[kj, rank]


@pytest.mark.parametrize("p", [1, 97, 300])
def test_block_dominance_matches_dense(p):
    """The Fenwick sweeps of 1, 2, 3 and 8 label blocks against the dense mask (sums) and its
    transpose (spread), queries with every label limit 0 .. P."""
    g = torch.Generator().manual_seed(p)
    label_order, rank = torch.randperm(p, generator=g), torch.randperm(p, generator=g)
    label_rank = torch.empty_like(label_order)
    label_rank[label_order] = torch.arange(p)
    lab = torch.randint(0, p + 1, (p,), generator=g)
    sco = torch.randint(0, p + 1, (p, 2), generator=g)
    lab[:2], sco[:2, 0] = torch.tensor([p, 0])[:p], p
    mask = _dense_mask(label_rank, rank, lab, sco)
    w = torch.randn(p, 4, generator=g, dtype=torch.float64)
    u = torch.randn(p, 2, 3, generator=g, dtype=torch.float64)
    want_f = torch.einsum("qtj,jm->qtm", mask, w).numpy()
    want_g = torch.einsum("qtj,qtm->jm", mask, u).numpy()
    for blocks in (1, 2, 3, 8):
        f, g_ = _blocked_dominance(label_order.numpy(), rank.numpy(), lab.numpy(), sco.numpy(),
                                   w.numpy(), u.numpy(), blocks)
        assert np.allclose(f, want_f, rtol=0, atol=1e-12), blocks
        assert np.allclose(g_, want_g, rtol=0, atol=1e-12), blocks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_block_and_scaled_tables(dtype):
    """value[b] * g + slope[b] * g * (x - left[b]) in the tables' dtype, positives overwritten
    by their own gradient times g, block by block."""
    rng = np.random.default_rng(0)
    n, nb = 1000, 9
    bins = rng.integers(0, nb + 1, n).astype(np.int32)
    x = rng.normal(size=n).astype(dtype)
    tables = rng.random((3, nb + 1)).astype(dtype)
    pos_index = np.sort(rng.choice(n, 40, replace=False)).astype(np.int64)
    pos_grad = rng.normal(size=40).astype(dtype)
    g = tables.dtype.type(0.7)
    scaled, pos_scaled = kernels.scale_tables(tables, pos_grad, g)
    assert scaled.dtype == dtype and np.array_equal(scaled[0], tables[0] * g)
    assert np.array_equal(pos_scaled, pos_grad * g)
    out = np.empty(n, dtype=dtype)
    for lo, hi in ((0, 333), (333, 334), (334, 1000)):
        kernels.gather_block(bins, x, scaled, True, pos_index, pos_scaled, lo, hi, out)
    want = scaled[0][bins] + scaled[1][bins] * (x - scaled[2][bins])
    want[pos_index] = pos_scaled
    assert out.dtype == dtype and np.allclose(out, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("delta", [0.0, 0.25])
def test_false_positives_exact(delta):
    """N_FP from the merged bins of four blocks against the dense sum of H over negatives."""
    g = torch.Generator().manual_seed(2)
    x = torch.round(torch.randn(30_000, generator=g) * 4) / 4
    pos = torch.randperm(30_000, generator=g)[:100]
    t = torch.zeros(30_000)
    t[pos] = 1.0
    s = x[pos].double()
    order = kernels.stable_argsort(s.numpy())
    _, _, _, edges, lo_pos, hi_pos = kernels.positive_windows(s.numpy(), order, delta)
    _, count_cum, sum_cum = _bins(x.numpy(), t.numpy(), edges, delta == 0, blocks=4)
    n_fp = kernels.false_positives(count_cum, sum_cum, edges, lo_pos, hi_pos, delta)
    diff = x[t == 0].double()[None, :] - s[:, None]
    h = (diff >= 0).double() if delta == 0 else (diff / (2 * delta) + 0.5).clamp(0, 1)
    assert np.allclose(n_fp, h.sum(1).numpy(), atol=1e-9, rtol=0)
