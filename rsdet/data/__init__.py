"""Datasets: the embedded synthetic "shapes" generators and a loader for any COCO-format dataset.

- ``rsdet.data.shapes.ensure_shapes_dataset`` — generate (once) the shapes dataset in COCO format, or
  its long-tailed LVIS-format variant (``shapes_lvis``).
- ``rsdet.data.coco_dataset.CocoDetectionDataset`` — read COCO, LVIS v1 or any COCO-format folder.
- ``rsdet.data.masks`` — instance masks from polygons / RLE, decoded per item.
- ``rsdet.data.sampling.build_train_sampler`` — LVIS repeat-factor sampling.
- ``rsdet.data.build.build_dataset`` / ``dataset_eval_info`` — the same from ``conf/dataset/*.yaml``.

Conventions (targets, mask formats and checks, generated data, sampling): docs/datasets.md.
"""
