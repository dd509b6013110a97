"""Deliberately simple per-positive loop references (float64 numpy), from the papers' definitions.

No vectorisation tricks: each function visits the positives one by one exactly as the papers and
describes the official code, so the fast implementation can be checked against it.
"""

import numpy as np


def step(x, delta):
    """H_delta: clamp(x / (2 delta) + 0.5, 0, 1); hard step (x >= 0) for delta = 0."""
    x = np.asarray(x, dtype=np.float64)
    if delta == 0:
        return (x >= 0).astype(np.float64)
    return np.clip(x / (2 * delta) + 0.5, 0.0, 1.0)


def rank_sort_reference(logits, targets, delta, eps=1e-10):
    """(ranking_loss, sorting_loss, gradient) as the official RS function (Eq. 9-10, S7, S16)."""
    s = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    grad = np.zeros_like(s)
    pos = np.flatnonzero(y > 0)
    if len(pos) == 0:
        return 0.0, 0.0, grad
    threshold = s[pos].min() - delta
    neg = np.flatnonzero((y == 0) & (s >= threshold))
    rank_losses, sort_losses = [], []
    for i in pos[np.argsort(s[pos], kind="stable")]:
        h = step(s[pos] - s[i], delta)               # includes j = i
        g = step(s[neg] - s[i], delta)
        rank_plus = h.sum()
        n_fp = g.sum()
        l_rank = n_fp / (rank_plus + n_fp)
        l_sort = (h * (1 - y[pos])).sum() / rank_plus
        in_target = y[pos] >= y[i]
        l_sort_target = (h * in_target * (1 - y[pos])).sum() / (h * in_target).sum()
        sort_loss = l_sort - l_sort_target
        mis = h * (y[pos] < y[i])
        if n_fp > eps:
            grad[i] -= l_rank
            grad[neg] += l_rank * g / n_fp
        if mis.sum() > eps:
            grad[i] -= sort_loss
            grad[pos] += sort_loss * mis / mis.sum()
        rank_losses.append(l_rank)
        sort_losses.append(sort_loss)
    return np.mean(rank_losses), np.mean(sort_losses), grad / len(pos)


def ap_reference(logits, targets, delta):
    """AP Loss (docs/losses.md): interpolated precision, positives visited by ascending logit."""
    s = np.asarray(logits, dtype=np.float64).ravel()
    t = np.asarray(targets, dtype=np.float64).ravel()
    grad = np.zeros_like(s)
    pos = np.flatnonzero(t == 1)
    if len(pos) == 0:
        return 0.0, grad
    neg = np.flatnonzero((t == 0) & (s >= s[pos].min() - delta))
    p_max, interpolated = 0.0, []
    for i in pos[np.argsort(s[pos], kind="stable")]:
        h = step(s[pos] - s[i], delta)
        h[pos == i] = 0.0
        g = step(s[neg] - s[i], delta)
        rank_plus = 1.0 + h.sum()
        rank = rank_plus + g.sum()
        prec = rank_plus / rank
        if p_max <= prec:
            p_max = prec
            grad[neg] += g / rank
        else:
            grad[neg] += g / rank * (1 - p_max) / (1 - prec)
        grad[i] -= 1 - p_max
        interpolated.append(p_max)
    return 1.0 - np.mean(interpolated), grad / len(pos)


def alrp_reference(logits, targets, loc_errors, delta, eps=1e-5):
    """aLRP classification (supplementary Eq. S19) -> (value, rank per positive in flattened order, grad)."""
    s = np.asarray(logits, dtype=np.float64).ravel()
    t = np.asarray(targets, dtype=np.float64).ravel()
    e = np.asarray(loc_errors, dtype=np.float64).ravel()
    grad = np.zeros_like(s)
    pos = np.flatnonzero(t == 1)
    if len(pos) == 0:
        return 0.0, np.zeros(0), grad
    neg = np.flatnonzero((t == 0) & (s >= s[pos].min() - delta))
    ranks = np.zeros(len(pos))
    precisions = []
    for a in np.argsort(s[pos], kind="stable"):
        i = pos[a]
        h = step(s[pos] - s[i], delta)
        h[a] = 0.0
        g = step(s[neg] - s[i], delta)
        n_fp = g.sum()
        rank = 1.0 + h.sum() + n_fp
        ranks[a] = rank
        precisions.append((1.0 + h.sum()) / rank)
        if n_fp > eps:
            update = ((h * e).sum() + n_fp) / rank
            grad[i] -= update
            grad[neg] += update * g / n_fp
    return 1.0 - np.mean(precisions), ranks, grad / len(pos)
