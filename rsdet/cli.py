"""``rsdet`` command line: train | evaluate | predict | report | data. Thin: every command delegates."""

from __future__ import annotations

import sys

USAGE = """\
usage: rsdet <command> [args]

Experiment runner for ranking-based object-detection losses (Rank & Sort, AP, aLRP).

commands:
  train      train + evaluate a detector; Hydra overrides, e.g.
               rsdet train                                 # RS-Faster R-CNN on the embedded shapes data (CPU)
               rsdet train loss=ce sampler=random
               rsdet train -m loss=rs,ce sampler=none,random   # Hydra multirun: 4 jobs
               rsdet train detector=atss                   # RS-ATSS (also paa, cascade_rcnn)
               rsdet train resume=true                     # continue the latest interrupted run
               rsdet train -m loss=rs,ce resume=true       # resume a sweep: completed jobs are reused
             `rsdet train --help` lists the config groups and options.
  evaluate   COCO/LVIS AP + oLRP of a results file, run directory or checkpoint; score-threshold sweeps
  predict    run a trained detector on images: PNGs with the detections drawn + COCO results
               rsdet predict outputs/runs/<date>/<run> photos/ --out drawn/ [--gt annotations.json]
  report     turn a folder of runs into the paper's tables (Markdown, CSV, LaTeX)
  data       generate / inspect datasets (`rsdet data shapes`, `rsdet data shapes_lvis`, `rsdet data check`),
             draw a split's ground truth (`rsdet data browse shapes --n 16`)

`rsdet <command> --help` for details.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from rsdet import __version__

        print(f"rsdet {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            from rsdet.train_cli import main as train_main

            return train_main(rest)
        if command == "evaluate":
            from rsdet.evaluation.cli import main as evaluate_main

            return evaluate_main(rest)
        if command == "predict":
            from rsdet.predict.cli import main as predict_main

            return predict_main(rest)
        if command == "report":
            from rsdet.report.cli import main as report_main

            return report_main(rest)
        if command == "data":
            from rsdet.data.cli import main as data_main

            return data_main(rest)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"rsdet: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
