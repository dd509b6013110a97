"""Images that are too large to decode safely or malformed are DataErrors naming the file (issue 19)."""

import json

import numpy as np
import pytest
from PIL import Image

from rsdet.data.coco_dataset import CocoDetectionDataset
from rsdet.errors import DataError


@pytest.fixture
def one_image(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 48, 3), dtype=np.uint8)).save(images / "a.png")
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 48, "height": 32}],
                               "categories": [{"id": 1, "name": "x"}], "annotations": []}))
    return images / "a.png", CocoDetectionDataset(images, ann)


def test_a_decompression_bomb_is_a_clear_error(one_image, monkeypatch):
    path, dataset = one_image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 48 x 32 is then more than twice the limit
    with pytest.raises(DataError, match="too large to decode safely") as info:
        dataset[0]
    assert str(path) in str(info.value) and "image id 1" in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_malformed_image_is_a_clear_error(one_image, damage):
    path, dataset = one_image
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
                      "empty": b""}[damage])
    with pytest.raises(DataError, match="cannot be read as an image") as info:
        dataset[0]
    assert str(path) in str(info.value)
