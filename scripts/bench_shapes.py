"""Time the shapes dataset generator and the COCO loader; print the dataset statistics.

    python scripts/bench_shapes.py [--repeats 3] [--num-train 800] [--num-val 200] [--image-size 192]

Generates into a temporary folder (never the cache) ``repeats`` times and reports the median wall
time, then the time to build the loader and read every training item (one process, one core).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rsdet.data.coco_dataset import CocoDetectionDataset
from rsdet.data.shapes import ensure_shapes_dataset, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=800)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=192)
    args = parser.parse_args()
    params = dict(num_train=args.num_train, num_val=args.num_val, image_size=args.image_size)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            root = Path(tmp) / f"run{r}"
            start = time.perf_counter()
            paths = ensure_shapes_dataset(root, progress=False, **params)
            times.append(time.perf_counter() - start)
        stats = read_manifest(paths.root)["stats"]
        start = time.perf_counter()
        ds = CocoDetectionDataset(paths.train_images, paths.train_annotations)
        build = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        read = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in paths.root.rglob("*") if f.is_file()) / 2**20
    n = args.num_train + args.num_val
    print(f"generate {n} images of {args.image_size} px: median {statistics.median(times):.2f} s "
          f"over {args.repeats} runs ({', '.join(f'{t:.2f}' for t in times)}), {size_mb:.1f} MiB on disk")  # fmt: skip
    print(f"loader: build {build * 1e3:.0f} ms, read all {len(ds)} train items {read:.2f} s "
          f"({read / len(ds) * 1e3:.2f} ms/item)")  # fmt: skip
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
