"""rsdet's PNG encoder (rsdet/vis/png.py): what it writes reads back as the same pixels in Pillow, whatever
rows repeat, and a planted symlink is replaced, not written through."""

import numpy as np
import pytest
from PIL import Image

from rsdet.vis.png import encode_png, filtered_rows, write_png


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (31, 17)])
def test_png_round_trip_of_noise_and_of_enlarged_pictures(tmp_path, shape):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    enlarged = noise.repeat(3, axis=0).repeat(2, axis=1)  # repeated rows take the "Up" filter
    for k, pixels in enumerate((noise, enlarged)):
        path = write_png(pixels, tmp_path / f"{k}.png")
        back = Image.open(path)
        assert back.mode == "RGB" and np.array_equal(np.asarray(back), pixels)
    rows = filtered_rows(enlarged)
    assert rows[0, 0] == 1 and rows[1, 0] == 2 and not rows[1, 1:].any()
    if enlarged.size > 1000:
        assert len(encode_png(enlarged, 1)) < enlarged.size // 2  # repeated pixels compress
    with pytest.raises(ValueError, match="uint8"):
        encode_png(noise.astype(np.float32))


def test_a_planted_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").symlink_to(victim)
    write_png(np.zeros((4, 4, 3), dtype=np.uint8), out / "x.png")
    assert victim.read_text() == "keep me"
    assert not (out / "x.png").is_symlink() and Image.open(out / "x.png").size == (4, 4)
    assert [p.name for p in out.iterdir()] == ["x.png"]  # no temporary file left
