import math
import random

import pytest
import torch

from rsdet.models.assign.atss import AssignerInputError
from rsdet.models.assign.paa import gmm_split, paa_anchor_scores, paa_reassign


def _simple_em(xs, reg_covar=1e-5, tol=1e-3, max_iter=100):
    """A deliberately plain float64 EM for a 2-component 1-D mixture, one sample at a time."""

    def log_pdf(v, m, var):
        return -0.5 * math.log(2 * math.pi * var) - (v - m) ** 2 / (2 * var)

    def log_mix(v, w, m, var):
        a = math.log(w[0]) + log_pdf(v, m[0], var[0])
        b = math.log(w[1]) + log_pdf(v, m[1], var[1])
        top = max(a, b)
        return a, b, top + math.log(math.exp(a - top) + math.exp(b - top))

    w, m, var = [0.5, 0.5], [min(xs), max(xs)], [1.0, 1.0]
    bound = -math.inf
    for _ in range(max_iter):
        resp, total = [], 0.0
        for v in xs:
            a, b, lse = log_mix(v, w, m, var)
            resp.append(math.exp(a - lse))
            total += lse
        new_bound = total / len(xs)
        n0 = sum(resp) + 10 * 2.220446049250313e-16
        n1 = sum(1 - r for r in resp) + 10 * 2.220446049250313e-16
        m = [sum(r * v for r, v in zip(resp, xs)) / n0,
             sum((1 - r) * v for r, v in zip(resp, xs)) / n1]
        var = [sum(r * (v - m[0]) ** 2 for r, v in zip(resp, xs)) / n0 + reg_covar,
               sum((1 - r) * (v - m[1]) ** 2 for r, v in zip(resp, xs)) / n1 + reg_covar]
        w = [n0 / (n0 + n1), n1 / (n0 + n1)]
        done = abs(new_bound - bound) < tol
        bound = new_bound
        if done:
            break
    comps, lls = [], []
    for v in xs:
        a, b, lse = log_mix(v, w, m, var)
        comps.append(0 if a >= b else 1)
        lls.append(lse)
    return comps, lls


# --- gmm_split -------------------------------------------------------------------------------

def test_gmm_split_obvious_split():
    scores = torch.tensor([0.1, 0.12, 0.15, 0.2, 1.5, 1.6, 1.8])
    component, loglik = gmm_split(scores)
    assert component.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert component.dtype == torch.long and loglik.dtype == torch.float64


def test_gmm_split_one_iteration_by_hand():
    # scores 0.3, 0.7; start: means 0.3 / 0.7, variances 1, weights 1/2.
    # E-step: log N(0.3 | 0.7, 1) - log N(0.3 | 0.3, 1) = -0.16 / 2 = -0.08, so the responsibility
    #   of component 0 is 1 / (1 + e^-0.08) = 0.519989 for 0.3 and 0.480011 for 0.7.
    # M-step: n0 = n1 = 1, weights 1/2; mean0 = 0.3 * 0.519989 + 0.7 * 0.480011 = 0.492004,
    #   mean1 = 0.507996; var0 = 0.519989 * 0.192004^2 + 0.480011 * 0.207996^2 + 1e-6
    #   = 0.039937 = var1.
    # (reg_covar 1e-6 here.)  Log-likelihood of 0.3:
    #   log(1/2 N(0.3 | 0.492004, 0.039937) + 1/2 N(0.3 | 0.507996, 0.039937))
    #   = log(1/2 (1.258274 + 1.161434)) = 0.190500, the same for 0.7 by symmetry.
    # Component: equal weights and variances, 0.3 is nearer mean0 -> 0, 0.7 -> 1.
    component, loglik = gmm_split(torch.tensor([0.3, 0.7], dtype=torch.float64), max_iter=1,
                                  reg_covar=1e-6)
    assert component.tolist() == [0, 1]
    var = 0.519989 * 0.192004 ** 2 + 0.480011 * 0.207996 ** 2 + 1e-6
    pdf = [math.exp(-(0.3 - m) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
           for m in (0.492004, 0.507996)]
    assert pdf == pytest.approx([1.258274, 1.161434], abs=2e-6)
    assert loglik.tolist() == pytest.approx([0.190500] * 2, abs=2e-6)
    assert math.log(sum(pdf) / 2) == pytest.approx(0.190500, abs=2e-6)


# Outputs of scikit-learn 1.9.1 GaussianMixture(2, covariance_type="diag", weights_init=[.5, .5],
# means_init=[[min], [max]], precisions_init=[[1], [1]], reg_covar=R) (default tol 1e-3,
# max_iter 100): predict() and score_samples() after fit().  R = 1e-5 is what the official
# RS-PAA code passes; the last row uses scikit-learn's default 1e-6.  In the third list the
# outlier 2.5 becomes a component of its own with variance ~R, hence its large log-likelihood
# (2.758 at R = 1e-5, 3.909 at R = 1e-6).
SKLEARN_VECTORS = [
    ([0.1, 0.12, 0.15, 0.2, 1.5, 1.6, 1.8], 1e-5, [0, 0, 0, 0, 1, 1, 1],
     [1.164814863848, 1.619757995957, 1.777238310917, 0.639880480646, -0.255950462526,
      0.279419656683, -0.577172534052]),
    ([0.2, 0.3, 0.4, 1.0, 1.6, 2.0], 1e-5, [0, 0, 0, 1, 1, 1],
     [0.144668897727, 0.890345874041, 0.144677514158, -1.526885021626, -0.752239390593,
      -1.374279676499]),
    ([0.5, 0.6, 0.9, 1.0, 1.1, 1.15, 1.2, 2.5], 1e-5, [0, 0, 0, 0, 0, 0, 0, 1],
     [-1.062874399373, -0.484268205374, 0.316878832655, 0.272370664009, 0.072083904702,
      -0.08647644645, -0.283981445267, 2.758082656832]),
    ([0.3, 0.7], 1e-5, [0, 1], [0.190499793195, 0.190499793195]),
    ([0.5, 0.6, 0.9, 1.0, 1.1, 1.15, 1.2, 2.5], 1e-6, [0, 0, 0, 0, 0, 0, 0, 1],
     [-1.0629982659, -0.484310938897, 0.316948437013, 0.272434027282, 0.072119183368,
      -0.086463401408, -0.28399609473, 3.909375198346]),
]


@pytest.mark.parametrize("scores, reg_covar, components, logliks", SKLEARN_VECTORS)
def test_gmm_split_matches_scikit_learn_outputs(scores, reg_covar, components, logliks):
    component, loglik = gmm_split(torch.tensor(scores, dtype=torch.float64), reg_covar=reg_covar)
    assert component.tolist() == components
    # 1e-8 relative: scikit-learn expands the variance as E[x^2] - mean^2
    assert loglik.tolist() == pytest.approx(logliks, rel=1e-8, abs=1e-9)


def test_default_reg_covar_is_the_rs_paa_value():
    scores = torch.tensor(SKLEARN_VECTORS[2][0], dtype=torch.float64)
    assert gmm_split(scores)[1][-1].item() == pytest.approx(2.758082656832, rel=1e-8)


def test_gmm_split_matches_a_plain_em_on_random_lists():
    rng = random.Random(0)
    for trial in range(60):
        n = rng.randint(2, 40)
        if trial % 3 == 0:
            xs = [rng.random() * 2 for _ in range(n)]
        elif trial % 3 == 1:
            xs = [rng.gauss(0.3, 0.05) for _ in range(n // 2)]
            xs += [rng.gauss(1.2, 0.3) for _ in range(n - n // 2)]
        else:
            xs = [round(rng.expovariate(2.0), 1) for _ in range(n)]  # with exact ties
        xs.sort()
        xs = torch.tensor(xs, dtype=torch.float32).double().tolist()  # what gmm_split sees
        comps, lls = _simple_em(xs)
        component, loglik = gmm_split(torch.tensor(xs, dtype=torch.float32))
        assert component.tolist() == comps, xs
        assert loglik.tolist() == pytest.approx(lls, rel=1e-9, abs=1e-9)


def test_gmm_split_reg_covar_and_constant_scores():
    # all scores equal: both components stay identical, every score goes to component 0
    component, loglik = gmm_split(torch.tensor([0.4, 0.4, 0.4]))
    assert component.tolist() == [0, 0, 0]
    # variance = reg_covar (1e-5 by default): density 1 / sqrt(2 pi 1e-5)
    assert loglik.tolist() == pytest.approx([-0.5 * math.log(2 * math.pi * 1e-5)] * 3)
    _, loglik = gmm_split(torch.tensor([0.4, 0.4, 0.4]), reg_covar=1e-6)
    assert loglik.tolist() == pytest.approx([-0.5 * math.log(2 * math.pi * 1e-6)] * 3)


def test_gmm_split_rejects_empty_and_non_finite_input():
    with pytest.raises(AssignerInputError, match="non-empty 1-D"):
        gmm_split(torch.zeros(0))
    with pytest.raises(AssignerInputError, match="finite"):
        gmm_split(torch.tensor([0.1, float("nan")]))


# --- paa_reassign ----------------------------------------------------------------------------

def _scatter(num, entries):
    """entries: anchor -> (gt, level, score); returns candidate_gt, scores, levels."""
    cand = torch.full((num,), -1, dtype=torch.long)
    scores = torch.full((num,), 0.01)  # non-candidates get the best score of all: must not matter
    levels = torch.zeros(num, dtype=torch.long)
    for a, (g, lv, s) in entries.items():
        cand[a], levels[a], scores[a] = g, lv, s
    return cand, scores, levels


def test_paa_reassign_toy():
    # topk = 4, 3 boxes, 20 anchors, levels 0 and 1.
    # box 0: level 0 scores 0.5 (a3), 0.6 (a10), 0.9 (a1), 1.0 (a7), 3.0 (a5): the 4 lowest are
    #   kept, a5 is dropped; level 1 scores 1.1 (a12), 1.15 (a19), 1.2 (a14), 2.5 (a16): all kept.
    #   Pooled and sorted: 0.5 0.6 0.9 1.0 1.1 1.15 1.2 2.5 -- the third scikit-learn vector:
    #   components 0 0 0 0 0 0 0 1, the most likely component-0 member is 0.9 (log-lik 0.3169),
    #   so the positives are a3, a10, a1; a7, a12, a19, a14, a16 and the dropped a5 are negatives.
    # box 1: a single candidate (a8): fewer than 2, no positive.
    # box 2: level 0 scores 0.1 (a0), 0.12 (a2), 0.15 (a4), 0.2 (a6) and level 1 1.5 (a9),
    #   1.6 (a11), 1.8 (a13): the first scikit-learn vector; component 0 = the first four, the
    #   most likely of them is 0.15 (log-lik 1.777), so the positives are a0, a2, a4 and a6
    #   (component 0, but after the cut) is a negative.
    entries = {3: (0, 0, 0.5), 10: (0, 0, 0.6), 1: (0, 0, 0.9), 7: (0, 0, 1.0), 5: (0, 0, 3.0),
               12: (0, 1, 1.1), 19: (0, 1, 1.15), 14: (0, 1, 1.2), 16: (0, 1, 2.5),
               8: (1, 1, 0.2),
               0: (2, 0, 0.1), 2: (2, 0, 0.12), 4: (2, 0, 0.15), 6: (2, 0, 0.2),
               9: (2, 1, 1.5), 11: (2, 1, 1.6), 13: (2, 1, 1.8)}
    cand, scores, levels = _scatter(20, entries)
    out = paa_reassign(cand, scores, levels, num_gts=3, topk=4)
    expected = [-1] * 20
    for a in (3, 10, 1):
        expected[a] = 0
    for a in (0, 2, 4):
        expected[a] = 2
    assert out.tolist() == expected
    assert out.dtype == torch.long


def test_paa_reassign_topk_per_level_drops_a_candidate_that_would_be_positive():
    # one box; level 0: a0 0.2, a1 0.1, a2 0.12; level 1: a3 1.0, a4 1.1.
    # topk 2 keeps a1, a2 (the two lowest of level 0) and a3, a4: pooled 0.1 0.12 1.0 1.1, the
    #   mixture splits 0 0 1 1, so a1, a2 are positive and the dropped a0 is a negative.
    # topk 3 keeps a0 too: pooled 0.1 0.12 0.2 1.0 1.1, components 0 0 0 1 1, and a0 (0.2) is
    #   within the cut, so it becomes positive.
    entries = {0: (0, 0, 0.2), 1: (0, 0, 0.1), 2: (0, 0, 0.12), 3: (0, 1, 1.0), 4: (0, 1, 1.1)}
    cand, scores, levels = _scatter(5, entries)
    assert gmm_split(torch.tensor([0.1, 0.12, 1.0, 1.1]))[0].tolist() == [0, 0, 1, 1]
    comp, ll = gmm_split(torch.tensor([0.1, 0.12, 0.2, 1.0, 1.1]))
    assert comp.tolist() == [0, 0, 0, 1, 1] and ll[:3].argmax() == 2
    assert paa_reassign(cand, scores, levels, num_gts=1, topk=2).tolist() == [-1, 0, 0, -1, -1]
    assert paa_reassign(cand, scores, levels, num_gts=1, topk=3).tolist() == [0, 0, 0, -1, -1]


def test_paa_reassign_without_candidates_or_boxes():
    cand = torch.full((6,), -1, dtype=torch.long)
    out = paa_reassign(cand, torch.rand(6), torch.zeros(6, dtype=torch.long), num_gts=0)
    assert out.tolist() == [-1] * 6
    # two candidates, each for a different box: both boxes have fewer than 2 -> no positive
    cand = torch.tensor([0, -1, 1, -1, -1, -1])
    out = paa_reassign(cand, torch.rand(6), torch.zeros(6, dtype=torch.long), num_gts=2)
    assert out.tolist() == [-1] * 6


def _reference_reassign(cand, scores, levels, num_gts, topk):
    out = [-1] * len(cand)
    for g in range(num_gts):
        pooled = []
        for lv in sorted(set(levels.tolist())):
            members = [(scores[a].item(), a) for a in range(len(cand))
                       if cand[a] == g and levels[a] == lv]
            pooled += sorted(members)[:topk]
        pooled.sort()
        if len(pooled) < 2:
            continue
        comp, ll = gmm_split(torch.tensor([s for s, _ in pooled], dtype=torch.float64))
        low = [i for i in range(len(pooled)) if comp[i] == 0]
        if not low:
            continue
        best = max(low, key=lambda i: (ll[i].item(), -i))
        for i in low:
            if i <= best:
                out[pooled[i][1]] = g
    return out


def test_paa_reassign_batched_fit_equals_one_box_at_a_time():
    gen = torch.Generator().manual_seed(0)
    num, num_gts = 400, 7
    cand = torch.randint(-1, num_gts, (num,), generator=gen)
    cand[cand == 6] = -1  # box 6 has no candidate
    cand[torch.nonzero(cand == 5)[1:].flatten()] = -1  # box 5 has one
    levels = torch.randint(0, 4, (num,), generator=gen)
    scores = torch.rand(num, generator=gen) * 2
    scores[cand == 3] = scores[cand == 3] * 0.1 + (levels[cand == 3] > 1) * 1.5  # a clear split
    out = paa_reassign(cand, scores, levels, num_gts=num_gts, topk=9)
    ref = _reference_reassign(cand, scores, levels, num_gts, topk=9)
    assert out.tolist() == ref
    assert (out == 3).sum() > 0 and (out == 5).sum() == 0 and (out == 6).sum() == 0
    kept = out >= 0
    assert (out[kept] == cand[kept]).all()  # a positive keeps its candidate box


def test_paa_reassign_rejects_bad_inputs():
    cand = torch.tensor([0, 1, -1])
    with pytest.raises(AssignerInputError, match="num_gts=1"):
        paa_reassign(cand, torch.rand(3), torch.zeros(3, dtype=torch.long), num_gts=1)
    with pytest.raises(AssignerInputError, match="anchor_scores must have shape"):
        paa_reassign(cand, torch.rand(4), torch.zeros(3, dtype=torch.long), num_gts=2)
    with pytest.raises(AssignerInputError, match="finite"):
        paa_reassign(cand, torch.tensor([0.1, float("inf"), 0.0]),
                     torch.zeros(3, dtype=torch.long), num_gts=2)


# --- paa_anchor_scores -----------------------------------------------------------------------

def _giou(p, t):
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    iw = max(0.0, min(p[2], t[2]) - max(p[0], t[0]))
    ih = max(0.0, min(p[3], t[3]) - max(p[1], t[1]))
    inter = iw * ih
    union = area(p) + area(t) - inter
    hull = (max(p[2], t[2]) - min(p[0], t[0])) * (max(p[3], t[3]) - min(p[1], t[1]))
    return inter / union - (hull - union) / hull


def test_paa_anchor_scores_against_a_direct_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.5]], requires_grad=True)
    classes = torch.tensor([0, 2])
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0]])
    target = torch.tensor([[2.0, 1.0, 12.0, 9.0], [20.0, 20.0, 30.0, 30.0]])
    got = paa_anchor_scores(logits, classes, pred, target, alpha=0.25, gamma=2.0, box_weight=1.3)
    assert not got.requires_grad
    for i in range(2):
        focal = 0.0
        for c in range(3):
            p = 1 / (1 + math.exp(-logits[i, c].item()))
            if c == classes[i]:
                focal += -0.25 * (1 - p) ** 2 * math.log(p)
            else:
                focal += -0.75 * p ** 2 * math.log(1 - p)
        expected = focal + 1.3 * (1 - _giou(pred[i].tolist(), target[i].tolist()))
        assert got[i].item() == pytest.approx(expected, rel=1e-5)
    # the second box pair is disjoint: GIoU < 0, so its box term exceeds 1.3
    assert got[1].item() > 1.3


def test_paa_anchor_scores_checks_shapes_and_classes():
    with pytest.raises(AssignerInputError, match="pred_boxes must have shape"):
        paa_anchor_scores(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(3, 4),
                          torch.zeros(2, 4))
    with pytest.raises(AssignerInputError, match=r"in \[0, 3\)"):
        paa_anchor_scores(torch.zeros(2, 3), torch.tensor([0, -1]), torch.zeros(2, 4),
                          torch.zeros(2, 4))
    assert paa_anchor_scores(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long),
                             torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)
