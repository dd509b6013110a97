"""Datasets: the embedded synthetic "shapes" generator and a loader for any COCO-format dataset.

- ``rsdet.data.shapes.ensure_shapes_dataset`` — generate (once) the shapes dataset in COCO format.
- ``rsdet.data.coco_dataset.CocoDetectionDataset`` — read COCO, LVIS v1 or any COCO-format folder.
- ``rsdet.data.build.build_dataset`` / ``dataset_eval_info`` — the same from ``conf/dataset/*.yaml``.
"""
