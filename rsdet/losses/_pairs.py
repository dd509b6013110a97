"""Positive-vs-positive terms of the ranking losses (float64).

Plain smoothed-step sums over positives (:func:`relation_sums`, all AP/aLRP need) take
O(P log P).  RS's sorting terms couple the logit order with the label order (targets
{j : y_j >= y_i}, mis-sorted pmfs), so they use dense P x P blocks, O(P^2) time — fine because
P (positive entries per batch) is small next to the number of negatives; rows are processed in
cache-sized chunks so memory stays O(P + block).
"""

from __future__ import annotations

import torch

# Entries per (rows x P) block: 256 KB float64, so the few live blocks stay in cache, and at
# torch's parallel grain size (32768), so the many small elementwise ops run without OpenMP
# hand-offs, which stall badly when other processes share the cores.  Measured on the 2-core
# box: P = 1000 in ~3 ms, P = 5000 in ~95 ms; 16 MB blocks were 2x slower.
PAIR_BLOCK = 1 << 15


def smoothed_step_(diff: torch.Tensor, delta: float) -> torch.Tensor:
    """H_delta(diff) in place: clamp(diff / (2 delta) + 1/2, 0, 1); delta = 0: [diff >= 0]."""
    if delta > 0:
        return diff.mul_(0.5 / delta).add_(0.5).clamp_(0.0, 1.0)
    return diff.ge_(0.0)  # in-place compare keeps the float dtype: 1.0 / 0.0


def _step_block(s: torch.Tensor, a: int, b: int, delta: float) -> torch.Tensor:
    """Rows [a, b) of the matrix H_delta(s_j - s_i) (rows i, columns j)."""
    return smoothed_step_(s[None, :] - s[a:b, None], delta)


def self_relation(delta: float) -> float:
    """H_delta(0): 0.5 for delta > 0, 1 for the hard step (delta = 0)."""
    return 0.5 if delta > 0 else 1.0


def _row_blocks(num: int):
    rows = max(1, PAIR_BLOCK // max(num, 1))
    for start in range(0, num, rows):
        yield start, min(num, start + rows)


def relation_sums(s: torch.Tensor, delta: float, weights: torch.Tensor) -> torch.Tensor:
    """(P,) sums over j of H_delta(s_j - s_i) * weights[j] (self term j = i included), O(P log P).

    No P x P matrix: with the logits sorted and prefix sums of w and w*s, positive i needs the
    total weight above its window (s_i + delta) and, inside the window (s_i - delta, s_i + delta],
    sum_j w_j (s_j - s_i + delta) / (2 delta) — the same piecewise-linear argument as
    :mod:`rsdet.losses._intervals`.  Boundary entries are exact by continuity of H (delta > 0);
    for delta = 0 the left search counts ties as "above" (H(0) = 1).

    Args:
        s: (P,) float64 logits.  weights: (P,) float64.
    """
    order = torch.sort(s, stable=True).indices
    sorted_s, w = s[order], weights[order]
    zero = w.new_zeros(1)
    cum_w = torch.cat([zero, torch.cumsum(w, 0)])
    total = cum_w[-1]
    if delta == 0:
        return total - cum_w[torch.searchsorted(sorted_s, s, right=False)]
    cum_ws = torch.cat([zero, torch.cumsum(w * sorted_s, 0)])
    lo = s - delta
    a = torch.searchsorted(sorted_s, lo, right=True)            # entries <= s_i - delta: H = 0
    b = torch.searchsorted(sorted_s, s + delta, right=True)     # entries > s_i + delta: H = 1
    inside = (cum_ws[b] - cum_ws[a] - lo * (cum_w[b] - cum_w[a])) / (2 * delta)
    return (total - cum_w[b]) + inside


def sorting_terms(s: torch.Tensor, y: torch.Tensor, delta: float, eps: float):
    """Per-positive RS sorting quantities (spec §1.2 steps 1, 5-8; paper Eq. S4 sorting pmf).

    Args:
        s, y: (P,) float64 logits and continuous labels of the positives.
        delta: smoothing delta (0 = hard step).
        eps: guard on the mis-sorted mass D_i (1e-10 in the official code).

    Returns:
        rank_plus (P,): sum_j H(s_j - s_i) over positives incl. self (H(0) = 0.5 or 1).
        sort_loss (P,): Delta_S(i) = l_S(i) - l*_S(i).
        mis_mass (P,): D_i = sum_j H(s_j - s_i) [y_j < y_i].
        received (P,): sum_i [D_i > eps] Delta_S(i) H(s_j - s_i)[y_j < y_i] / D_i — what
            positive j receives through the sorting pmfs p_S(j | i) (second term of Eq. S16).
    """
    p = s.numel()
    one_minus_y = 1.0 - y
    rank_plus, sort_loss, mis_mass = (torch.empty_like(s) for _ in range(3))
    received = torch.zeros_like(s)
    for a, b in _row_blocks(p):
        h = _step_block(s, a, b, delta)                               # h_ij, rows i in [a, b)
        # target_ij = h_ij [y_j >= y_i] (T_i); float arithmetic is ~5x faster than a bool mask,
        # and y_j - y_i >= 0 <=> y_j >= y_i holds exactly in IEEE arithmetic.
        target = (y[None, :] - y[a:b, None]).ge_(0.0).mul_(h)
        cur_n, cur_s = h.sum(1), h @ one_minus_y
        tgt_n, tgt_s = target.sum(1), target @ one_minus_y
        mis = h.sub_(target)                                          # m_ij = h_ij [y_j < y_i]
        d = mis.sum(1)
        loss = cur_s / cur_n - tgt_s / tgt_n                          # l_S(i) - l*_S(i)
        rank_plus[a:b], sort_loss[a:b], mis_mass[a:b] = cur_n, loss, d
        received.addmv_(mis.t(), torch.where(d > eps, loss / d, 0.0))
    return rank_plus, sort_loss, mis_mass, received
