"""Derive tests/evaluation/data/lvis_v0.5_val_100.json from the shared LVIS v0.5 val subset.

Keeps every image, annotation and category of ``shared/data/lvis_v0.5_val_100.json`` (100 COCO
val images, 1,230 categories, federated negative / not-exhaustive lists) with exactly the fields
the evaluators read, and drops the rest (URLs, licences, category definitions and synonyms) so
the committed fixture stays small and the tests never need the shared folder.

    python tests/evaluation/data/derive_lvis_fixture.py [SOURCE] [DEST]
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / ".." / "shared" / "data" / "lvis_v0.5_val_100.json"
IMAGE_KEYS = ("id", "height", "width", "file_name", "neg_category_ids", "not_exhaustive_category_ids")
CATEGORY_KEYS = ("id", "name", "frequency", "synset", "image_count", "instance_count")


def derive(data: dict) -> dict:
    return {
        "info": {"description": "LVIS v0.5 val, 100-image subset (rsdet test fixture)",
                 "source": "https://www.lvisdataset.org", "license": "CC BY 4.0"},
        "images": [{k: im[k] for k in IMAGE_KEYS if k in im} for im in data["images"]],
        "annotations": data["annotations"],
        "categories": [{k: c[k] for k in CATEGORY_KEYS if k in c} for c in data["categories"]],
    }


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "lvis_v0.5_val_100.json"
    dst.write_text(json.dumps(derive(json.loads(src.read_text())), separators=(",", ":")))
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
