"""Worked example of supplementary Figs. S1/S2 and the extra reference vectors."""

import pytest
import torch
from kernel_paths import kernel  # noqa: F401  (fixture)

from rsdet.losses import (alrp_loc_loss, alrp_loss, ap_loss, positive_ranks, rank_sort_loss,
                          ranking_gradient_l1)

pytestmark = pytest.mark.usefixtures("kernel")   # every test: torch code and numba kernels

LOGITS = [3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0, -4.0]
LABELS = [0.9, 0.4, 0.0, 0.0, 0.8, 0.0, 0.1, 0.0]
BINARY = [1.0 if v > 0 else 0.0 for v in LABELS]


def _rs(delta, labels=LABELS, dtype=torch.float64):
    x = torch.tensor(LOGITS, dtype=dtype, requires_grad=True)
    rank, sort = rank_sort_loss(x, torch.tensor(labels, dtype=dtype), delta)
    (rank + sort).backward()
    return rank, sort, x.grad


def test_rs_delta0_matches_figure_s2():
    rank, sort, grad = _rs(0.0)
    assert rank.item() == pytest.approx(0.828571 / 4, abs=1e-6)          # 0.207143
    assert sort.item() == pytest.approx(0.0375, abs=1e-9)
    assert (rank + sort).item() == pytest.approx(0.244643, abs=1e-6)
    expected_x4 = [0, 0.15, 0.342857, 0.342857, -0.55, 0.142857, -0.428571, 0]  # Fig. S2(b)
    assert torch.allclose(grad * 4, torch.tensor(expected_x4, dtype=grad.dtype), atol=1e-6)
    returned = [0, 0.0375, 0.085714, 0.085714, -0.1375, 0.035714, -0.107143, 0]
    assert torch.allclose(grad, torch.tensor(returned, dtype=grad.dtype), atol=1e-6)


@pytest.mark.parametrize("delta", [0.5, 0.25, 1.0])
def test_rs_smoothed_matches_reference_numbers(delta):
    # all gaps are >= 1 >= 2 delta... for delta <= 0.5; for delta = 1 the reference numbers are the same
    rank, sort, grad = _rs(delta)
    assert rank.item() == pytest.approx(0.226496, abs=1e-6)
    assert sort.item() == pytest.approx(0.046667, abs=1e-6)
    assert (rank + sort).item() == pytest.approx(0.273162, abs=1e-6)
    expected_x4 = [0, 0.186667, 0.376068, 0.376068, -0.631111, 0.153846, -0.461538, 0]
    assert torch.allclose(grad * 4, torch.tensor(expected_x4, dtype=grad.dtype), atol=1e-6)


def test_rs_with_ignored_negative():
    labels = list(LABELS)
    labels[2] = -1.0
    rank, sort, grad = _rs(0.0, labels)
    assert rank.item() == pytest.approx(0.145833, abs=1e-6)
    assert sort.item() == pytest.approx(0.0375, abs=1e-9)
    expected_x4 = [0, 0.15, 0, 0.416667, -0.4, 0.166667, -0.333333, 0]
    assert torch.allclose(grad * 4, torch.tensor(expected_x4, dtype=grad.dtype), atol=1e-6)


@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_ap_vector(delta):
    x = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    loss = ap_loss(x, torch.tensor(BINARY, dtype=torch.float64), delta)
    loss.backward()
    assert loss.item() == pytest.approx(0.207143, abs=1e-6)
    expected_x4 = [0, 0, 0.342857, 0.342857, -0.4, 0.142857, -0.428571, 0]
    assert torch.allclose(x.grad * 4, torch.tensor(expected_x4, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_alrp_vectors(delta):
    targets = torch.tensor(BINARY, dtype=torch.float64)
    x = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    out = alrp_loss(x, targets, torch.zeros(4, dtype=torch.float64), delta)
    out.cls_loss.backward()
    assert out.cls_loss.item() == pytest.approx(0.207143, abs=1e-6)
    assert out.rank.tolist() == pytest.approx([1, 2, 5, 7], abs=1e-9)
    assert out.order.tolist() == [3, 2, 1, 0]   # ascending logits of positives 0, 1, 4, 6
    expected_ap = [0, 0, 0.342857, 0.342857, -0.4, 0.142857, -0.428571, 0]
    assert torch.allclose(x.grad * 4, torch.tensor(expected_ap, dtype=torch.float64), atol=1e-6)

    errors = torch.tensor([0.1, 0.6, 0.2, 0.9], dtype=torch.float64)   # 1 - y over positives
    x = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    out = alrp_loss(x, targets, errors, delta)
    out.cls_loss.backward()
    assert out.cls_loss.item() == pytest.approx(0.207143, abs=1e-6)   # value excludes E_loc
    expected = [0, 0, 0.455714, 0.455714, -0.54, 0.185714, -0.557143, 0]
    assert torch.allclose(x.grad * 4, torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    loc_in = errors.clone().requires_grad_()
    loc = alrp_loc_loss(loc_in, out.rank, out.order)
    assert loc.item() == pytest.approx(0.221786, abs=1e-6)
    loc.backward()
    assert loc_in.grad is not None and torch.all(loc_in.grad > 0)


def test_positive_ranks_vector():
    ranks = positive_ranks(torch.tensor(LOGITS), torch.tensor(LABELS), delta=0.0)
    assert ranks.tolist() == pytest.approx([1, 2, 5, 7])


@pytest.mark.parametrize("fn", ["rs", "ap", "alrp"])
def test_zero_positives_give_zero_value_and_gradient(fn):
    x = torch.randn(3, 5, requires_grad=True)
    targets = torch.zeros(3, 5)
    targets[0, 0] = -1
    if fn == "rs":
        out = rank_sort_loss(x, targets)
        total = out.ranking_loss + out.sorting_loss
    elif fn == "ap":
        total = ap_loss(x, targets)
    else:
        out = alrp_loss(x, targets, torch.zeros(0))
        assert out.rank.numel() == 0 and out.order.numel() == 0
        total = out.cls_loss + alrp_loc_loss(torch.zeros(0, requires_grad=True), out.rank, out.order)
    assert total.item() == 0.0
    total.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0
    if fn != "alrp":
        assert ranking_gradient_l1(out.ranking_loss if fn == "rs" else total).item() == 0.0


def test_weighting_contract_only_ranking_output_carries_gradient():
    """w_r * ranking + w_s * sorting -> w_r * g, whatever w_s (gradient contract, docs/losses.md)."""
    _, _, g = _rs(0.5)
    for w_rank, w_sort, factor in [(2.0, 0.0, 2.0), (1.0, 5.0, 1.0), (0.2, 0.2, 0.2),
                                   (0.0, 1.0, 0.0)]:
        x = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
        rank, sort = rank_sort_loss(x, torch.tensor(LABELS, dtype=torch.float64), 0.5)
        (w_rank * rank + w_sort * sort).backward()
        assert torch.allclose(x.grad, factor * g, atol=1e-12)
    x = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    rank, sort = rank_sort_loss(x, torch.tensor(LABELS, dtype=torch.float64), 0.5)
    sort.backward()                       # still differentiable, but contributes nothing
    assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_and_shapes(dtype):
    x = torch.tensor(LOGITS, dtype=dtype).reshape(2, 4).requires_grad_()
    rank, sort = rank_sort_loss(x, torch.tensor(LABELS, dtype=dtype).reshape(2, 4), 0.5)
    expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert rank.dtype == sort.dtype == expected_dtype
    (rank + sort).backward()
    assert x.grad.dtype == dtype and x.grad.shape == (2, 4)
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    # bf16 cannot hold the label 0.9 exactly, so compare to a reference on the rounded labels
    labels = torch.tensor(LABELS, dtype=dtype).double()
    ref_rank, ref_sort = rank_sort_loss(torch.tensor(LOGITS, dtype=torch.float64), labels, 0.5)
    assert rank.item() == pytest.approx(ref_rank.item(), abs=tol)
    assert sort.item() == pytest.approx(ref_sort.item(), abs=tol)


def test_ranking_gradient_l1_closed_form():
    _, _, g = _rs(0.5)
    x = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    rank, _ = rank_sort_loss(x, torch.tensor(LABELS, dtype=torch.float64), 0.5)
    assert ranking_gradient_l1(rank).item() == pytest.approx(g.abs().sum().item(), abs=1e-12)
    with pytest.raises(ValueError, match="rank_sort_loss"):
        ranking_gradient_l1(rank * 2)


def test_bad_inputs_raise_clear_errors():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="shape"):
        rank_sort_loss(x, torch.zeros(5))
    with pytest.raises(ValueError, match="delta"):
        rank_sort_loss(x, torch.zeros(4), delta=-0.1)
    with pytest.raises(ValueError, match="floating-point"):
        ap_loss(torch.zeros(4, dtype=torch.int64), torch.zeros(4))
    with pytest.raises(ValueError, match="positives"):
        alrp_loss(x, torch.tensor([1.0, 0, 0, 1]), torch.zeros(3))
