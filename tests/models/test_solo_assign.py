"""SOLO's grid assignment on a hand-checked 64 × 64 toy image (rsdet/models/solo_assign.py's docstring):
scale ranges, the centre region around the centre of mass, the 3 × 3 cap and first-come cells."""

import torch

from rsdet.models.solo_assign import centre_cells, centre_of_mass, solo_assign
from rsdet.models.stage import NEGATIVE


def instance(rows, cols, size=64):
    mask = torch.zeros(size, size, dtype=torch.uint8)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return mask, torch.tensor([cols[0], rows[0], cols[1], rows[1]], dtype=torch.float32)


def cells(classes, grid):
    return sorted((int(i) // grid, int(i) % grid) for i in torch.nonzero(classes != NEGATIVE).flatten())


def toy():
    # A: 16 x 16 square at rows/cols 8-23 (scale 16: both levels); B: 64 x 32 band at cols 32-63 (scale 45.3:
    # the coarse level only).
    (ma, ba), (mb, bb) = instance((8, 24), (8, 24)), instance((0, 64), (32, 64))
    return torch.stack([ba, bb]), torch.tensor([3, 1]), torch.stack([ma, mb])


def test_centre_of_mass_is_in_pixel_index_units():
    mask, _ = instance((8, 24), (8, 24))
    assert centre_of_mass(mask[None]).tolist() == [[15.5, 15.5]]
    ell = torch.zeros(1, 10, 10)
    ell[0, 0, :] = 1
    ell[0, :, 0] = 1  # an L: the mass centre is near the corner, not the box centre (4.5, 4.5)
    cy, cx = centre_of_mass(ell)[0].tolist()
    assert abs(cy - 45 / 19) < 1e-6 and abs(cx - 45 / 19) < 1e-6


def test_scale_ranges_and_centre_regions():
    boxes, labels, masks = toy()
    (c8, o8), (c4, o4) = solo_assign(boxes, labels, masks, (64, 64), [8, 4], [[1, 24], [16, 64]], sigma=0.2)
    # grid 8 (8 px cells): only A (45.3 > 24). Centre (15.5, 15.5) -> cell (1, 1); region 15.5 +- 0.2 * 16 / 2
    # = [13.9, 17.1] -> cells 1..2 in both directions.
    assert cells(c8, 8) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert set(c8[c8 != NEGATIVE].tolist()) == {3} and set(o8[c8 != NEGATIVE].tolist()) == {0}
    assert bool((o8[c8 == NEGATIVE] == -1).all())
    # grid 4 (16 px cells): A -> [13.9, 17.1] / 16 -> rows, cols 0..1; B centre (31.5, 47.5) -> cell (1, 2),
    # rows [31.5 -+ 6.4] / 16 -> 1..2, cols [47.5 -+ 3.2] / 16 -> 2..3.
    a = [(0, 0), (0, 1), (1, 0), (1, 1)]
    b = [(1, 2), (1, 3), (2, 2), (2, 3)]
    assert cells(c4, 4) == sorted(a + b)
    for (r, c) in b:
        assert c4[r * 4 + c] == 1 and o4[r * 4 + c] == 1


def test_the_three_by_three_cap():
    # sigma 1: B's region spans rows 0..3 and cols 1..3 of the 4 x 4 grid; capped at one cell from (1, 2)
    assert centre_cells((31.5, 47.5), (32.0, 16.0), (64, 64), 4) == (0, 2, 1, 3)
    boxes, labels, masks = toy()
    (c4, _), = solo_assign(boxes[1:], labels[1:], masks[1:], (64, 64), [4], [[16, 64]], sigma=1.0)
    assert cells(c4, 4) == [(r, c) for r in range(3) for c in range(1, 4)]
    # a region inside one cell gives that cell only
    assert centre_cells((20.5, 20.5), (0.5, 0.5), (64, 64), 4) == (1, 1, 1, 1)


def test_first_instance_keeps_shared_cells_and_empty_masks_are_skipped():
    (m1, b1), (m2, b2) = instance((8, 24), (8, 24)), instance((10, 22), (10, 26))
    empty = torch.zeros_like(m1)
    boxes = torch.stack([b1, b2, b1])
    (c, o), = solo_assign(boxes, torch.tensor([0, 5, 2]), torch.stack([m1, m2, empty]), (64, 64), [8], [[1, 64]])
    # both centre on cells 1..2 x 1..2 (the second at (15.5, 17.5) -> region cols [15.9, 19.1] -> 1..2): the
    # first instance keeps all four; the empty third one takes nothing
    assert cells(c, 8) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert set(c[c != NEGATIVE].tolist()) == {0} and set(o[o >= 0].tolist()) == {0}
