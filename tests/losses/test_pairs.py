"""Positive-pair sums (rsdet.losses._pairs) against dense P x P computations, float64."""

import pytest
import torch
from kernel_paths import use_kernel

from rsdet.losses import _pairs
from rsdet.losses._pairs import Dominance, PositivePairs, dominance_prefix, relation_sums


def _step(diff, delta):
    return (diff >= 0).double() if delta == 0 else ((diff / (2 * delta)) + 0.5).clamp(0, 1)


def dense_sorting_terms(s, y, delta, eps):
    """The sorting quantities straight from the P x P matrix h_ij = H(s_j - s_i)."""
    h = _step(s[None, :] - s[:, None], delta)
    lower = (y[None, :] < y[:, None]).double()          # [y_j < y_i]
    rank_plus = h.sum(1)
    target = h * (1 - lower)
    sort_loss = h @ (1 - y) / rank_plus - target @ (1 - y) / target.sum(1)
    mis = h * lower
    d = mis.sum(1)
    received = mis.t() @ torch.where(d > eps, sort_loss / d, torch.zeros_like(d))
    return rank_plus, sort_loss, d, received


def _case(seed, p, ties):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(p, generator=g, dtype=torch.float64) * 1.5
    y = torch.rand(p, generator=g, dtype=torch.float64) * 0.95 + 0.05
    if ties:
        s = torch.round(s * 2) / 2       # ties, also exactly on window edges s_i +- delta
        y = torch.round(y * 4) / 4 + 0.05
    return s, y


@pytest.fixture(params=["prefix", "dense", "numba", "numba-mt"])
def path(request, monkeypatch):
    """Run the sorting terms through the chunked prefix sums or the small-P dense matrix (torch
    code), or through the numba kernels (Fenwick trees) on one thread or on four (each weight
    column its own pass; skipped without numba)."""
    use_kernel(monkeypatch, request.param if request.param.startswith("numba") else "torch")
    monkeypatch.setattr(_pairs, "DENSE_MAX", 0 if request.param == "prefix" else 10**9)
    return request.param


@pytest.mark.parametrize("delta", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("p,ties", [(1, False), (2, True), (7, True), (300, False), (613, True)])
def test_sorting_terms_match_dense(delta, p, ties, path):
    s, y = _case(p + int(delta * 8), p, ties)
    got = PositivePairs(s, delta).sorting_terms(y, 1e-10)
    for a, b in zip(got, dense_sorting_terms(s, y, delta, 1e-10)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-11), (a - b).abs().max()


def test_all_tied_logits_and_labels(path):
    s = torch.zeros(40, dtype=torch.float64)
    y = torch.tensor([0.5, 0.2, 0.9, 0.5] * 10, dtype=torch.float64)
    for delta in (0.0, 0.5):
        got = PositivePairs(s, delta).sorting_terms(y, 1e-10)
        for a, b in zip(got, dense_sorting_terms(s, y, delta, 1e-10)):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 16, 64, 500])
def test_dominance_prefix_any_chunk(chunk):
    g = torch.Generator().manual_seed(chunk)
    p, q = 97, 400
    label_rank, score_rank = torch.randperm(p, generator=g), torch.randperm(p, generator=g)
    w = torch.randn(p, 3, generator=g, dtype=torch.float64)
    lab = torch.randint(0, p + 1, (q,), generator=g)
    sco = torch.randint(0, p + 1, (q, 2), generator=g)
    lab[:3], sco[:3, 0] = torch.tensor([0, p, p]), torch.tensor([p, 0, p])
    mask = (label_rank[None, None, :] < lab[:, None, None]) & (
        score_rank[None, None, :] < sco[:, :, None])
    expected = mask.double() @ w
    got = dominance_prefix(label_rank, score_rank, w, lab, sco, chunk=chunk)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 3, 16, 500])
def test_dominance_spread_is_the_transpose(chunk):
    """spread(u)[j] = sum_{q,t} M[q, t, j] u[q, t] for the mask M that sums() applies."""
    g = torch.Generator().manual_seed(chunk + 1)
    p, q = 89, 300
    label_rank, score_rank = torch.randperm(p, generator=g), torch.randperm(p, generator=g)
    lab = torch.randint(0, p + 1, (q,), generator=g)
    sco = torch.randint(0, p + 1, (q, 2), generator=g)
    lab[:3], sco[:3, 1] = torch.tensor([0, p, p]), torch.tensor([p, 0, p])
    mask = ((label_rank[None, None, :] < lab[:, None, None])
            & (score_rank[None, None, :] < sco[:, :, None])).double()      # (Q, T, P)
    u = torch.randn(q, 2, 3, generator=g, dtype=torch.float64)
    expected = torch.einsum("qtj,qtm->jm", mask, u)
    dom = Dominance(label_rank, score_rank, lab, sco, chunk=chunk, query_block=2000)
    assert torch.allclose(dom.spread(u), expected, rtol=0, atol=1e-11)
    w = torch.randn(p, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(dom.sums(w), torch.einsum("qtj,jm->qtm", mask, w), rtol=0, atol=1e-11)


@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_relation_sums_match_dense(delta):
    s, _ = _case(3, 500, ties=True)
    w = torch.rand(500, dtype=torch.float64)
    expected = _step(s[None, :] - s[:, None], delta) @ w
    assert torch.allclose(relation_sums(s, delta, w), expected, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [5, 3000])
def test_stable_argsort_matches_torch_sort(dtype, n):
    """Packed-key numpy sort (n >= 2048, CPU) and the torch.sort fallback agree with a stable
    torch.sort: ties keep index order, -0.0 ties with +0.0, infinities sort to the ends."""
    g = torch.Generator().manual_seed(n)
    v = torch.round(torch.randn(n, generator=g) * 4) / 4          # many ties
    v[: n // 5] = 0.0
    v[1:: 7] = -0.0
    v[3], v[4] = float("inf"), -float("inf")
    v = v.to(dtype)
    assert torch.equal(_pairs.stable_argsort(v), torch.sort(v, stable=True).indices)


def test_stable_argsort_fallbacks():
    """Values the packed key cannot hold (NaN, float64 beyond float32) use torch.sort."""
    g = torch.Generator().manual_seed(0)
    fine = torch.randn(3000, generator=g, dtype=torch.float64)     # not float32 values
    fine[::3] = fine[1::3]                                         # ties
    with_nan = torch.randn(3000, generator=g)
    with_nan[::100] = float("nan")
    for v in (fine, with_nan, with_nan.double()):
        assert torch.equal(_pairs.stable_argsort(v), torch.sort(v, stable=True).indices)


@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_sorting_terms_above_packed_sort_threshold(delta, path):
    """P > 2048: positives and labels sorted through the packed keys (float32 values, ties)."""
    g = torch.Generator().manual_seed(5)
    s = (torch.round(torch.randn(2100, generator=g) * 8) / 8).double()
    y = (torch.round(torch.rand(2100, generator=g) * 16) / 16 + 0.01).float().double()
    if path == "dense":
        s, y = s[:700], y[:700]
    got = PositivePairs(s, delta).sorting_terms(y, 1e-10)
    for a, b in zip(got, dense_sorting_terms(s, y, delta, 1e-10)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-10), (a - b).abs().max()
