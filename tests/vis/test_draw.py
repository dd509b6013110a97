"""Drawing detections and ground truth (rsdet/vis/draw.py) and the background PNG writer (writer.py)."""

import numpy as np
import pytest
import torch
from PIL import Image

from rsdet.errors import RsdetError
from rsdet.vis.draw import (CROWD_COLOR, class_colors, display_factor, draw_detections, draw_instances, save_png,
                            side_by_side, text_color, titled)
from rsdet.vis.writer import PngWriter

NAMES = ["circle", "square", "triangle"]


def _grey(h=40, w=60):
    return torch.full((3, h, w), 0.5)


def test_class_colours_are_distinct_and_do_not_depend_on_the_number_of_classes():
    colors = class_colors(12)
    assert len(set(colors)) == 12
    assert class_colors(3) == colors[:3]
    assert text_color((255, 255, 0)) == "black" and text_color((0, 0, 128)) == "white"


def test_boxes_are_drawn_in_their_class_colour_and_leave_the_rest_of_the_image_alone():
    image = _grey()
    out = draw_instances(image, torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.tensor([1]), NAMES,
                         scores=torch.tensor([0.9]), width=1)
    assert out.dtype == torch.uint8 and out.shape == (3, 40, 60)
    assert tuple(out[:, 30, 20].tolist()) == class_colors(3)[1]  # bottom edge of the box
    assert tuple(out[:, 35, 50].tolist()) == (128, 128, 128)  # far from it: untouched
    empty = draw_instances(image, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), NAMES)
    assert torch.equal(empty, out.new_full(out.shape, 128))


def test_enlarged_pictures_scale_boxes_with_the_pixels():
    assert display_factor(192, 192, 384) == 2 and display_factor(500, 900, 384) == 1 and display_factor(10, 10, 0) == 1
    out = draw_instances(_grey(), torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.tensor([0]), NAMES, factor=3, width=1)
    assert out.shape == (3, 120, 180)
    assert tuple(out[:, 90, 45].tolist()) == class_colors(3)[0]  # the bottom edge, 3 x 30


def test_masks_are_tinted_under_the_box_and_crowd_regions_are_grey():
    image = _grey()
    masks = torch.zeros((2, 40, 60))
    masks[0, 20:26, 12:20] = 0.9  # above the 0.5 threshold
    masks[0, 28:34, 12:20] = 0.3  # below: not drawn
    out = draw_instances(image, torch.tensor([[10.0, 2.0, 30.0, 38.0], [40.0, 5.0, 55.0, 35.0]]),
                         torch.tensor([2, 0]), NAMES, masks=masks, crowd=torch.tensor([False, True]), width=1)
    grey = torch.tensor([128, 128, 128], dtype=torch.uint8)
    assert not torch.equal(out[:, 23, 15], grey) and torch.equal(out[:, 31, 15], grey)
    inside_crowd = out[:, 30, 47].tolist()  # filled grey, semi-transparent over mid-grey
    assert max(abs(v - c) for v, c in zip(inside_crowd, CROWD_COLOR)) < 30
    assert tuple(out[:, 35, 47].tolist()) == CROWD_COLOR  # its bottom edge


def test_score_threshold_hides_low_detections():
    det = {"boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0], [30.0, 5.0, 50.0, 20.0]]), "scores": torch.tensor([0.9, 0.2]),
           "labels": torch.tensor([0, 1])}
    out = draw_detections(_grey(), det, NAMES, score_thresh=0.5)
    assert tuple(out[:, 20, 10].tolist()) == class_colors(3)[0]
    assert tuple(out[:, 20, 40].tolist()) == (128, 128, 128)


def test_panels_titles_and_png_round_trip(tmp_path):
    a, b = torch.zeros((3, 20, 30), dtype=torch.uint8), torch.full((3, 10, 5), 7, dtype=torch.uint8)
    both = side_by_side([a, b], gap=2)
    assert both.shape == (3, 20, 37) and both[0, 15, 34] == 255 and both[0, 5, 34] == 7
    assert titled(a, "x").shape == (3, 34, 30)
    path = save_png(both, tmp_path / "sub" / "x.png")
    assert np.array_equal(np.asarray(Image.open(path)), both.permute(1, 2, 0).numpy())


def test_background_writer_writes_every_picture_and_names_an_unwritable_file(tmp_path):
    with PngWriter(pending=2) as writer:
        for k in range(5):
            writer.submit(torch.full((3, 8, 8), k, dtype=torch.uint8), tmp_path / f"{k}.png")
    assert sorted(p.name for p in writer.written) == [f"{k}.png" for k in range(5)]
    assert np.asarray(Image.open(tmp_path / "3.png"))[0, 0, 0] == 3
    (tmp_path / "blocked").write_text("a file, not a folder")
    with pytest.raises(RsdetError, match="cannot write .*blocked"):
        with PngWriter() as writer:
            writer.submit(torch.zeros((3, 4, 4), dtype=torch.uint8), tmp_path / "blocked" / "x.png")


def test_captions_are_pasted_at_the_box_corner_in_the_class_colour():
    from rsdet.vis.draw import caption_alpha

    out = draw_instances(torch.zeros((3, 60, 90)), torch.tensor([[10.0, 10.0, 80.0, 50.0]]), torch.tensor([1]), NAMES,
                         scores=torch.tensor([0.875]), width=1).permute(1, 2, 0).numpy()
    alpha = caption_alpha("square ", "0.88")  # the caption strip (name, score), at (x1 + line, y1 + line)
    h, w = alpha.shape
    strip = out[11 : 11 + h, 11 : 11 + w]
    color = np.array(class_colors(3)[1])
    text = np.array([0, 0, 0] if text_color(class_colors(3)[1]) == "black" else [255, 255, 255])
    ink = alpha > 200  # glyph cores (the font is anti-aliased)
    assert (alpha == 0).any() and ink.sum() > 20
    assert (strip[alpha == 0] == color).all()
    assert (np.abs(strip[ink].astype(int) - text).max(axis=1) < np.abs(strip[ink].astype(int) - color).max(axis=1)).all()
    assert (out[30:45, 20:70] == 0).all()  # inside the box, below the caption: untouched


def test_overlapping_masks_blend_once_with_the_last_mask_on_top_and_enlarge_with_the_image():
    from rsdet.vis.draw import MASK_ALPHA

    masks = torch.zeros((2, 40, 60), dtype=torch.bool)
    masks[0, 5:20, 5:30] = True
    masks[1, 10:25, 20:40] = True
    boxes = torch.tensor([[45.0, 30.0, 59.0, 39.0]] * 2)  # away from the masks: their captions cover no mask pixel
    out = draw_instances(_grey(), boxes, torch.tensor([0, 2]), NAMES, masks=masks, factor=2, width=1)
    assert out.shape == (3, 80, 120)
    colors = class_colors(3)

    def blended(c):
        return [round(128 * (1 - MASK_ALPHA) + v * MASK_ALPHA) for v in c]

    assert out[:, 2 * 15, 2 * 10].tolist() == blended(colors[0])  # only mask 0
    assert out[:, 2 * 15 + 1, 2 * 25 + 1].tolist() == blended(colors[2])  # both: the later one, blended once
    assert out[:, 2 * 22, 2 * 35].tolist() == blended(colors[2])
    assert out[:, 2 * 30, 2 * 20].tolist() == [128, 128, 128]
    assert out[:, 2 * 39, 2 * 50].tolist() == list(colors[2])  # the boxes' bottom edge, enlarged


def test_drawing_leaves_the_callers_image_alone():
    pixels = torch.full((40, 60, 3), 9, dtype=torch.uint8)
    image = pixels.permute(2, 0, 1)  # a view of an (H, W, 3) buffer, as images read by PIL are
    draw_instances(image, torch.tensor([[1.0, 1.0, 30.0, 30.0]]), torch.tensor([0]), NAMES,
                   masks=torch.ones((1, 40, 60), dtype=torch.bool))
    assert (pixels == 9).all()
