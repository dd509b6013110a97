"""Fast RS / AP / aLRP against the per-positive loop reference (tests/losses/loss_reference.py).

Tolerances (issue 2): loss values 1e-6 absolute; gradients 1e-6 absolute and 1e-4 relative.
"""

import numpy as np
import pytest
import torch
from kernel_paths import use_kernel
from loss_reference import alrp_reference, ap_reference, rank_sort_reference

from rsdet.losses import _pairs, alrp_loss, ap_loss, rank_sort_loss

DELTAS = [0.0, 0.25, 0.5, 1.0]


@pytest.fixture(autouse=True, params=["prefix", "dense", "numba", "numba-mt"])
def pair_path(request, monkeypatch):
    """Every case runs through the torch code with RS's sorting terms from the chunked prefix
    sums and from the dense small-P matrix (the loss picks one by the number of positives), and
    through the numba kernels on one thread and on four (small blocks; skipped without numba)."""
    use_kernel(monkeypatch, request.param if request.param.startswith("numba") else "torch")
    monkeypatch.setattr(_pairs, "DENSE_MAX", 0 if request.param == "prefix" else 10**9)


def make_case(rng, n, p, *, tie_logits=False, tie_labels=False, ignore_frac=0.1,
              far_negatives=False, dtype=np.float64):
    s = rng.normal(size=n) * 2.0
    if tie_logits:
        s = np.round(s * 2) / 2          # many exact ties, also at window edges s_i +- delta
    t = np.zeros(n)
    pos = rng.choice(n, size=p, replace=False)
    labels = rng.uniform(0.05, 1.0, size=p)
    if tie_labels:
        labels = np.round(labels * 4) / 4 + 0.05
    t[pos] = labels
    rest = np.setdiff1d(np.arange(n), pos)
    t[rng.choice(rest, size=int(ignore_frac * len(rest)), replace=False)] = -1.0
    if far_negatives:                    # no relevant negative at all
        s[t == 0] = s[pos].min() - 10.0
    return s.astype(dtype).astype(np.float64), t


def check_close(value, ref_value, grad, ref_grad):
    assert abs(value - ref_value) <= 1e-6, (value, ref_value)
    err = np.abs(grad - ref_grad)
    assert err.max() <= 1e-6, err.max()
    assert np.all(err <= 1e-6 + 1e-4 * np.abs(ref_grad))


def run_rs(s, t, delta, dtype=torch.float64):
    x = torch.tensor(s, dtype=dtype, requires_grad=True)
    rank, sort = rank_sort_loss(x, torch.tensor(t, dtype=dtype), delta)
    (rank + sort).backward()
    return rank.item(), sort.item(), x.grad.double().numpy()


def binary(t):
    b = (t > 0).astype(np.float64)
    b[t < 0] = -1.0
    return b


def run_all(s, t, delta, rng):
    rank, sort, grad = run_rs(s, t, delta)
    ref_rank, ref_sort, ref_grad = rank_sort_reference(s, t, delta)
    check_close(rank, ref_rank, grad, ref_grad)
    assert abs(sort - ref_sort) <= 1e-6
    b = binary(t)
    if delta > 0:  # the reference AP divides by zero at delta = 0, like the official code
        x = torch.tensor(s, requires_grad=True)
        loss = ap_loss(x, torch.tensor(b), delta)
        loss.backward()
        ref_value, ref_grad = ap_reference(s, b, delta)
        check_close(loss.item(), ref_value, x.grad.numpy(), ref_grad)
    errors = rng.uniform(0.0, 2.0, size=int((b == 1).sum()))
    x = torch.tensor(s, requires_grad=True)
    out = alrp_loss(x, torch.tensor(b), torch.tensor(errors), delta)
    out.cls_loss.backward()
    ref_value, ref_rank, ref_grad = alrp_reference(s, b, errors, delta)
    check_close(out.cls_loss.item(), ref_value, x.grad.numpy(), ref_grad)
    assert np.allclose(out.rank.numpy(), ref_rank, atol=1e-9)


@pytest.mark.parametrize("seed", range(24))
def test_small_random_cases(seed):
    rng = np.random.default_rng(seed)
    delta = DELTAS[seed % 4]
    n = int(rng.integers(2, 400))
    p = int(rng.integers(1, min(n, 60) + 1))
    s, t = make_case(rng, n, p, tie_logits=seed % 3 == 0, tie_labels=seed % 2 == 0,
                     far_negatives=seed % 7 == 6)
    run_all(s, t, delta, rng)


@pytest.mark.parametrize("delta", DELTAS)
def test_single_positive_and_no_relevant_negative(delta):
    rng = np.random.default_rng(100)
    s, t = make_case(rng, 500, 1)
    run_all(s, t, delta, rng)
    s, t = make_case(rng, 500, 20, far_negatives=True)
    run_all(s, t, delta, rng)


@pytest.mark.parametrize("delta", DELTAS)
def test_all_tied(delta):
    """Every logit equal: all relations are H(0); labels tied in groups."""
    s = np.zeros(50)
    t = np.zeros(50)
    t[:10] = [0.5, 0.5, 0.2, 0.9, 0.9, 0.9, 0.3, 1.0, 0.2, 0.5]
    t[45:] = -1
    run_all(s, t, delta, np.random.default_rng(1))


@pytest.mark.parametrize("n,p,delta,ties", [
    (100_000, 500, 0.5, True),
    (100_000, 300, 0.0, True),
    (60_000, 200, 0.25, False),
    (30_000, 100, 1.0, True),
])
def test_large_cases(n, p, delta, ties):
    rng = np.random.default_rng(n + p)
    s, t = make_case(rng, n, p, tie_logits=ties, tie_labels=True)
    rank, sort, grad = run_rs(s, t, delta)
    ref_rank, ref_sort, ref_grad = rank_sort_reference(s, t, delta)
    check_close(rank, ref_rank, grad, ref_grad)
    assert abs(sort - ref_sort) <= 1e-6


@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_float32_inputs_match_reference_on_rounded_values(delta):
    """float32 logits: grid in float32 (edges s +- delta not representable) stays exact."""
    rng = np.random.default_rng(7)
    s, t = make_case(rng, 40_000, 150, tie_logits=True, dtype=np.float32)
    s[:2000] = np.float32(0.1) * np.arange(2000, dtype=np.float32)  # many near-edge values
    s = s.astype(np.float32).astype(np.float64)
    rank, sort, grad = run_rs(s, t, delta, dtype=torch.float32)
    ref_rank, ref_sort, ref_grad = rank_sort_reference(s, t.astype(np.float32), delta)
    # float32 outputs: values/gradients rounded to float32 (relative 6e-8)
    assert abs(rank - ref_rank) <= 1e-6 and abs(sort - ref_sort) <= 1e-6
    err = np.abs(grad - ref_grad)
    assert np.all(err <= 1e-6 + 1e-4 * np.abs(ref_grad))


@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_many_positives_float32(delta):
    """P = 2100 > 2048: the CPU sorts go through the packed numpy keys; the windows of the
    positives overlap heavily, logits and labels are tied, 10% of the entries are ignored,
    labels are continuous down to 1e-6 (a label of exactly 0 is a negative)."""
    rng = np.random.default_rng(21)
    s, t = make_case(rng, 6000, 2100, tie_logits=True, tie_labels=True, dtype=np.float32)
    t[t > 0] = np.where(rng.random(int((t > 0).sum())) < 0.05, 1e-6, t[t > 0])
    t = t.astype(np.float32).astype(np.float64)
    rank, sort, grad = run_rs(s, t, delta, dtype=torch.float32)
    ref_rank, ref_sort, ref_grad = rank_sort_reference(s, t, delta)
    assert abs(rank - ref_rank) <= 1e-6 and abs(sort - ref_sort) <= 1e-6
    err = np.abs(grad - ref_grad)
    assert np.all(err <= 1e-6 + 1e-4 * np.abs(ref_grad))
    rank, sort, grad = run_rs(s, t, delta)          # float64 logits holding float32 values
    check_close(rank, ref_rank, grad, ref_grad)
    assert abs(sort - ref_sort) <= 1e-6
